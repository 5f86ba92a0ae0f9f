"""Env-steps/s of N Simic worlds (what experiments/bench_vector_env.py runs): (a) N separate envs stepped one after
another (RLlib's default sync vector env), (b) the batch-first EsperVectorEnv, (b′) the same with a thread pool,
(c) N Ray actors with one env each.

Every arm plays the same scripted policy (germinate where allowed, advance where allowed, else wait), so each does
the same kind of work; arms are interleaved in every repeat (ratios from one run), the report shows medians, and a
profile shows where (b)'s time goes.
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)
ARMS = {"separate": "(a) N separate envs", "vector": "(b) batch-first vector env",
        "vector_threads": "(b′) vector env + thread pool", "actors": "(c) N Ray actors"}


def scripted_action(spec, flat_mask: np.ndarray) -> np.ndarray:
    """Germinate (first legal slot, the largest legal blueprint) where allowed, else advance, else wait."""
    from esper.leyline import FactoredAction, Op
    from esper.leyline.actions import ActionMasks

    m = ActionMasks.from_flat(spec, flat_mask)
    for op in (Op.GERMINATE, Op.ADVANCE):
        if m.op[op]:
            slot = int(np.flatnonzero(m.slot[op])[0])
            bp = int(np.flatnonzero(m.blueprint[slot])[-1]) if op is Op.GERMINATE else 0
            return FactoredAction(op, slot, bp, 0).as_array()
    return FactoredAction(Op.WAIT).as_array()


def run_separate(world, n: int, steps: int, seed: int) -> float:
    """(a) N EsperEnvs in gymnasium's SyncVectorEnv (RLlib's default for num_envs_per_env_runner = N)."""
    import gymnasium as gym

    from esper.simic.env import EsperEnv

    venv = gym.vector.SyncVectorEnv([lambda: EsperEnv(world) for _ in range(n)])
    return _drive(venv, venv.envs[0].action_spec, n, steps, seed)


def run_vector(world, n: int, steps: int, seed: int, workers: int = 1) -> float:
    """(b) the batch-first vector env as RLlib gets it; (b′) with `workers` threads for the models' compute."""
    from esper.simic.vector_env import EsperVectorEnv

    venv = EsperVectorEnv(world, num_envs=n, workers=workers)
    try:
        return _drive(venv, venv.envs[0].action_spec, n, steps, seed)
    finally:
        venv.close()


def _drive(venv, spec, n: int, steps: int, seed: int) -> float:
    obs, _ = venv.reset(seed=seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        actions = np.stack([scripted_action(spec, obs["action_mask"][i]) for i in range(n)])
        obs, *_ = venv.step(actions)
    return n * steps / (time.perf_counter() - t0)


def run_actors(world, n: int, steps: int, seed: int, cpus: float, gpus: float = 0.0) -> float:
    """(c) N Ray actors, one EsperEnv each, stepped in parallel (each takes its share of the CPUs and GPUs)."""
    import ray

    from esper.simic.env import EsperEnv

    @ray.remote
    class EnvActor:
        def __init__(self, world):
            self.env = EsperEnv(world)

        def reset(self, s):
            self.obs, _ = self.env.reset(seed=s)

        def step(self):
            self.obs, *_ = self.env.step(scripted_action(self.env.action_spec, self.obs["action_mask"]))

    actors = [EnvActor.options(num_cpus=cpus / n, num_gpus=gpus / n).remote(world) for _ in range(n)]
    try:
        ray.get([a.reset.remote(seed + i) for i, a in enumerate(actors)])
        t0 = time.perf_counter()
        for _ in range(steps):
            ray.get([a.step.remote() for a in actors])
        return n * steps / (time.perf_counter() - t0)
    finally:
        for a in actors:
            ray.kill(a)


@contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def profile_vector(world, n: int, steps: int) -> dict[str, float]:
    """Seconds per vector step spent in each phase of EsperVectorEnv (n worlds)."""
    from esper.simic import env as env_mod
    from esper.simic import vector_env as vec
    from esper.tolaria.data import DeviceLoader

    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    patches = [(vec.EsperVectorEnv, "_train_group"), (env_mod.EsperEnv, "begin_step"), (env_mod.EsperEnv, "finish_step"),
               (DeviceLoader, "_augment"), (vec.EsperVectorEnv, "step")]
    originals = [getattr(cls, name) for cls, name in patches]
    labels = ["models' forward/backward", "decisions applied (begin_step)",
              "Governor + evaluation + reward + observation (finish_step)", "shared augmentation", "step (total)"]
    for (cls, name), label, fn in zip(patches, labels, originals):
        setattr(cls, name, timed(label, fn))
    try:
        venv = vec.EsperVectorEnv(world, num_envs=n)
        obs, _ = venv.reset(seed=0)
        spent.clear()
        for _ in range(steps):
            actions = np.stack([scripted_action(venv.envs[0].action_spec, obs["action_mask"][i]) for i in range(n)])
            obs, *_ = venv.step(actions)
        venv.close()
    finally:
        for (cls, name), fn in zip(patches, originals):
            setattr(cls, name, fn)
    return {k: v / steps for k, v in spent.items()}


def arm_runners(world, steps: int, cores: int, threads: bool, actors: bool, gpus: float) -> dict[str, Callable]:
    """Each arm as (n, repeat) → env-steps/s; the actors arm needs Ray up (the GPU variant shares `gpus`)."""
    arms = {"separate": lambda n, rep: run_separate(world, n, steps, seed=rep),
            "vector": lambda n, rep: run_vector(world, n, steps, seed=rep)}
    if threads:
        arms["vector_threads"] = lambda n, rep: run_vector(world, n, steps, seed=rep, workers=cores)
    if actors:
        arms["actors"] = lambda n, rep: run_actors(world, n, steps, seed=rep, cpus=cores, gpus=gpus)
    return arms


def measure(arms: dict[str, Callable], ns: list[int], repeats: int, cores: int) -> dict[str, dict[int, list[float]]]:
    """Every arm at every N in every repeat, the arms' order rotated across repeats; env-steps/s per arm, N."""
    results: dict[str, dict[int, list[float]]] = {arm: {n: [] for n in ns} for arm in ARMS}
    order = list(arms)
    for rep in range(repeats):
        for n in ns:
            for arm in order[rep % len(order):] + order[:rep % len(order)]:
                with torch_threads(cores):
                    rate = arms[arm](n, rep)
                results[arm][n].append(rate)
                log.info(f"repeat {rep + 1}/{repeats}  N={n}  {arm:8s} {rate:6.2f} env-steps/s")
    return results


def run_benchmark(world, ns: list[int], steps: int, repeats: int, device: str = "cpu", threads: bool = True,
                  actors: bool = True) -> tuple[dict, dict[str, float], int]:
    """Every arm (a local Ray cluster only for the actors), then the profile of (b) at the largest N; the rates, the
    profile and the torch threads every arm ran with."""
    import ray
    import torch

    cores = torch.get_num_threads()
    gpus = 1.0 if device == "cuda" else 0.0  # the GPU variant shares one GPU between the N actors
    if actors:
        from esper.runtime import local_ray

        local_ray.init(None, num_cpus=cores, num_gpus=int(gpus), include_dashboard=False, logging_level="ERROR")
    try:
        results = measure(arm_runners(world, steps, cores, threads, actors, gpus), ns, repeats, cores)
        with torch_threads(cores):
            profile = profile_vector(world, max(ns), steps)
    finally:
        ray.shutdown()
    return results, profile, cores


def report(results: dict, profile: dict[str, float], ns: list[int], settings: dict) -> dict:
    """The JSON report: `settings` (preset, overrides, device, threads, steps, repeats), raw rates, medians, the
    median paired ratio of each arm to (a), the profile, and the markdown table."""
    med = {arm: {n: statistics.median(v) for n, v in per.items() if v} for arm, per in results.items()}
    paired = {arm: {n: statistics.median(a / s for a, s in zip(results[arm][n], results["separate"][n]))
                    for n in ns if results[arm][n]} for arm in results if arm != "separate"}
    arms = [a for a in ARMS if any(results[a].values())]
    head = "| N | " + " | ".join(ARMS[a] + " env-steps/s" for a in arms) + " | " + \
        " | ".join(f"{ARMS[a].split()[0]}/(a)" for a in arms if a != "separate") + " |"
    rows = [head, "|" + "---:|" * (1 + len(arms) + len(arms) - 1)]
    for n in ns:
        rows.append(f"| {n} | " + " | ".join(f"{med[a][n]:.2f}" for a in arms) + " | "
                    + " | ".join(f"**{paired[a][n]:.2f}**" for a in arms if a != "separate") + " |")
    prof = [f"| {k} | {v * 1000:.0f} ms |" for k, v in profile.items()]
    return settings | {"raw": results, "median": med, "ratio_to_separate": paired, "profile_seconds_per_step": profile,
                       "table": "\n".join(rows) + "\n\nWhere a vector step's time goes (N = " + str(max(ns)) + "):\n\n"
                                "| phase | per vector step |\n|---|---:|\n" + "\n".join(prof)}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, per in results.items():
        ns = [n for n, v in per.items() if v]
        if ns:
            meds = [statistics.median(per[n]) for n in ns]
            lo = [min(per[n]) for n in ns]
            hi = [max(per[n]) for n in ns]
            ax.errorbar(ns, meds, yerr=[np.subtract(meds, lo), np.subtract(hi, meds)], marker="o", capsize=3, label=ARMS[arm])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("worlds N")
    ax.set_ylabel("env-steps/s (median, min–max)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
