"""Env-steps/s of N Simic worlds: (a) N separate envs stepped one after another (what RLlib's default sync vector
env does), (b) the batch-first EsperVectorEnv, (c) N Ray actors with one env each.

    python experiments/bench_vector_env.py                          # smoke world, N ∈ {1, 2, 4, 8}, 5 repeats (≈ 15 min)
    python experiments/bench_vector_env.py --n 1 2 --repeats 2 --steps 4 --no-actors   # a quick look
    python experiments/bench_vector_env.py --device cuda --preset cifar10 --no-actors --steps 4 \
        --set world.trainer.max_batches_per_epoch=50                 # GPU variant (on a cluster GPU node)

Every arm plays the same scripted policy (germinate where allowed, advance where allowed, else wait), so each does
the same kind of work; arms are interleaved in every repeat (ratios from one run) and the table shows medians.
Also profiles where (b)'s time goes. Writes docs/data/bench_vector_env.json and docs/img/bench_vector_env.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help="world preset (name or YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="worlds per arm")
    p.add_argument("--steps", type=int, default=8, help="timed steps per world per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu | cuda (the GPU variant: one CUDA stream per model)")
    p.add_argument("--no-threads", action="store_true", help="skip arm (b′), the vector env with a thread pool")
    p.add_argument("--no-actors", action="store_true", help="skip arm (c), the Ray actors")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "data" / "bench_vector_env.json")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "bench_vector_env.png")
    return p.parse_args()


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
def _threads(n: int):
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


def main() -> None:
    args = _parse()
    import torch

    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.simic.config import TrainTamiyoConfig

    try:
        cfg = load_preset(args.preset, args.overrides + [f"world.device={args.device}"], TrainTamiyoConfig)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but CUDA is not available here")
    world = cfg.world
    cores = torch.get_num_threads()
    if not args.no_actors:
        from esper.runtime import local_ray

        local_ray.init(None, num_cpus=cores, num_gpus=1 if args.device == "cuda" else 0, include_dashboard=False, logging_level="ERROR")
    arms = {"separate": lambda n, rep: run_separate(world, n, args.steps, seed=rep),
            "vector": lambda n, rep: run_vector(world, n, args.steps, seed=rep)}
    if not args.no_threads:
        arms["vector_threads"] = lambda n, rep: run_vector(world, n, args.steps, seed=rep, workers=cores)
    if not args.no_actors:
        gpus = 1.0 if args.device == "cuda" else 0.0  # the GPU variant shares one GPU between the N actors
        arms["actors"] = lambda n, rep: run_actors(world, n, args.steps, seed=rep, cpus=cores, gpus=gpus)
    results: dict[str, dict[int, list[float]]] = {arm: {n: [] for n in args.n} for arm in ARMS}
    order = list(arms)
    for rep in range(args.repeats):
        for n in args.n:
            for arm in order[rep % len(order):] + order[:rep % len(order)]:  # rotate the order across repeats
                with _threads(cores):
                    rate = arms[arm](n, rep)
                results[arm][n].append(rate)
                print(f"repeat {rep + 1}/{args.repeats}  N={n}  {arm:8s} {rate:6.2f} env-steps/s", flush=True)
    with _threads(cores):
        profile = profile_vector(world, max(args.n), args.steps)
    report = _report(args, world, results, profile, cores)
    print(report["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _plot(results, args.plot, f"Simic env throughput: {args.preset} world, {args.device}, {cores} threads")
    print(f"wrote {args.out} and {args.plot}")


def _report(args, world, results, profile, cores) -> dict:
    med = {arm: {n: statistics.median(v) for n, v in per.items() if v} for arm, per in results.items()}
    paired = {arm: {n: statistics.median(a / s for a, s in zip(results[arm][n], results["separate"][n]))
                    for n in args.n if results[arm][n]} for arm in results if arm != "separate"}
    arms = [a for a in ARMS if any(results[a].values())]
    head = "| N | " + " | ".join(ARMS[a] + " env-steps/s" for a in arms) + " | " + \
        " | ".join(f"{ARMS[a].split()[0]}/(a)" for a in arms if a != "separate") + " |"
    rows = [head, "|" + "---:|" * (1 + len(arms) + len(arms) - 1)]
    for n in args.n:
        rows.append(f"| {n} | " + " | ".join(f"{med[a][n]:.2f}" for a in arms) + " | "
                    + " | ".join(f"**{paired[a][n]:.2f}**" for a in arms if a != "separate") + " |")
    prof = [f"| {k} | {v * 1000:.0f} ms |" for k, v in profile.items()]
    return {"preset": args.preset, "overrides": args.overrides, "device": args.device, "threads": cores,
            "steps": args.steps, "repeats": args.repeats, "raw": results, "median": med, "ratio_to_separate": paired,
            "profile_seconds_per_step": profile,
            "table": "\n".join(rows) + "\n\nWhere a vector step's time goes (N = " + str(max(args.n)) + "):\n\n"
                     "| phase | per vector step |\n|---|---:|\n" + "\n".join(prof)}


def _plot(results, path: Path, title: str) -> None:
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


if __name__ == "__main__":
    main()
