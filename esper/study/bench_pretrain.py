"""PPO to the learning bar from scratch vs from a BC warm start: env steps and wall-clock (what
experiments/bench_pretrain.py runs).

The bar (docs/results.md §5): the greedy policy beats WAIT-only by more than 2 paired standard errors on final
accuracy and on return over the evaluation episodes. Both arms train PPO with the same settings and are evaluated
every `eval_every` iterations (in Ray tasks while the env runners wait; evaluation time is not counted). The `bc`
arm first records and clones as the main job does (the config's `pretrain:` section): its clock and env steps
include the recording, and its clone is evaluated before PPO's first iteration. Each arm × seed keeps
OUT/<arm>-s<seed>/bench.jsonl (one line per evaluation) and a PPO checkpoint at every evaluation, from which a
resumed benchmark continues.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from esper.simic.config import TrainTamiyoConfig
from esper.simic.offline.record import FIRST_EVAL_SEED
from esper.study.episodes import EpisodeStats

log = logging.getLogger(__name__)
LEARNING_TEST = ["ppo.train_batch_size=512", "ppo.minibatch_size=128", "ppo.num_epochs=8", "ppo.lr=0.001"]
"""The §5 learning test's PPO settings, under any --set."""
ARMS = ("scratch", "bc")


@dataclass(frozen=True)
class PretrainBench:
    """One benchmark: the validated config both arms start from, where it lives, and when an arm stops."""

    base: TrainTamiyoConfig
    out: Path
    seeds: list[int]
    arms: list[str]
    max_iterations: int = 30
    eval_every: int = 2
    episodes: int = 20
    until: str = "bar"
    """"bar": an arm stops at its first evaluation that passes; "max": only at max_iterations."""

    @property
    def eval_seeds(self) -> list[int]:
        return [FIRST_EVAL_SEED + i for i in range(self.episodes)]

    def arm_config(self, arm: str, seed: int) -> TrainTamiyoConfig:
        """The base config with this seed, no end-of-run evaluation, and (scratch) no warm start."""
        data = self.base.model_dump(mode="json") | {"seed": seed, "eval_episodes": 0}
        return TrainTamiyoConfig.model_validate(data | ({"pretrain": None} if arm == "scratch" else {}))

    def done(self, rows: list[dict]) -> bool:
        return bool(rows) and ((rows[-1]["passed"] and self.until == "bar") or rows[-1]["iteration"] >= self.max_iterations)


def wait_baseline(bench: PretrainBench) -> list[EpisodeStats]:
    """WAIT-only on the evaluation episodes (every evaluation is paired with it), played once and kept in wait.json."""
    from esper.simic.env import EsperEnv
    from esper.study.episodes import play_set

    path = bench.out / "wait.json"
    if path.is_file():
        return [EpisodeStats(**d) for d in json.loads(path.read_text())]
    log.info(f"WAIT-only on {bench.episodes} evaluation episodes (the baseline every evaluation is paired with)")
    env = EsperEnv(bench.arm_config("scratch", 0).world)
    wait = play_set(env, "wait", bench.eval_seeds)
    path.write_text(json.dumps([asdict(w) for w in wait]))
    return wait


def _judge(cfg, agent_path: Path, wait: list, seeds: list[int]) -> dict:
    """The agent's greedy episodes, in parallel Ray tasks of no CPU reservation (PPO's env runners hold the
    cluster's CPUs but wait while the driver evaluates), paired with WAIT-only's."""
    import os

    from esper.study.episodes import evaluate_in_parallel, paired_difference

    chunk = -(-len(seeds) // (os.cpu_count() or 1))
    stats = evaluate_in_parallel(cfg.world, {"ppo": ("ppo", str(agent_path))}, seeds, num_cpus=0, chunk=chunk)["ppo"]
    d = {k: paired_difference(stats, wait, k) for k in ("final_metric", "episode_return")}
    return {"accuracy": d["final_metric"], "return": d["episode_return"],
            "passed": d["final_metric"]["beats_by_2se"] and d["episode_return"]["beats_by_2se"]}


def _export(algo, cfg, path: Path) -> None:
    from esper.leyline.features import feature_names
    from esper.tamiyo.agent_file import save_agent
    from esper.tolaria.builder import action_spec

    spec = action_spec(cfg.world)
    save_agent(path, algo.get_module().net, spec, feature_names(spec), cfg.model_dump(mode="json"))


def _rows(folder: Path) -> list[dict]:
    path = folder / "bench.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _log_row(folder: Path, row: dict) -> list[dict]:
    """Append an evaluation to the arm's log; all its rows."""
    with open(folder / "bench.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    a, r = row["accuracy"], row["return"]
    log.info(f"  {folder.name} iteration {row['iteration']:>2}: {row['env_steps']:>6} env steps, "
             f"{row['seconds'] / 60:5.1f} min; PPO − WAIT accuracy {a['mean']:+.2%} [{a['se']:.2%}], return "
             f"{r['mean']:+.3f} [{r['se']:.3f}]{'  → bar reached' if row['passed'] else ''}")
    return _rows(folder)


def _warm_start(cfg, folder: Path, rows: list[dict]) -> tuple[float, int]:
    """The bc arm's recording and clone (resumable); its seconds and env steps (the recorded episodes' steps)."""
    from esper.simic.offline.pretrain import warm_start_from_recording
    from esper.simic.offline.record import recorded

    if rows:
        return rows[0]["seconds"], rows[0]["env_steps"]
    _, summary = warm_start_from_recording(cfg, folder, "bench_pretrain.py")
    return summary["seconds"], sum(e["steps"] for e in recorded(folder / "offline"))


def run_arm(bench: PretrainBench, arm: str, seed: int, wait: list) -> list[dict]:
    """One arm × seed until the bar or the iteration cap (continuing what its folder holds); its evaluation rows."""
    cfg, folder = bench.arm_config(arm, seed), bench.out / f"{arm}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = _rows(folder)
    if bench.done(rows):
        return rows
    seconds, steps = _warm_start(cfg, folder, rows) if arm == "bc" else (0.0, 0)
    if arm == "bc" and not rows:  # the clone itself, before any PPO
        rows = _log_row(folder, {"iteration": 0, "env_steps": steps, "seconds": seconds}
                        | _judge(cfg, folder / "pretrain" / "agent.pt", wait, bench.eval_seeds))
        if rows[-1]["passed"] and bench.until == "bar":
            return rows
    return _train_arm(bench, cfg, folder, arm, rows, seconds, steps, wait)


def _restore(algo, folder: Path, arm: str, rows: list[dict]) -> tuple[list[dict], bool]:
    """Continue from the arm's last checkpoint (dropping evaluations after it), or start the bc arm from its clone;
    the rows kept, and whether a checkpoint was restored."""
    from esper.simic.ppo.algo import warm_start
    from esper.simic.ppo.train import checkpoint_iteration, latest_checkpoint
    from esper.tamiyo.agent_file import load_agent

    checkpoint = latest_checkpoint(folder)
    if checkpoint is not None and rows:
        algo.restore_from_path(str(checkpoint.resolve()))
        rows = [r for r in rows if r["iteration"] <= checkpoint_iteration(checkpoint)]  # a crash between the two
        (folder / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows, True
    if arm == "bc":
        warm_start(algo, load_agent(folder / "pretrain" / "agent.pt"))
    return rows, False


def _train_arm(bench, cfg, folder: Path, arm: str, rows: list[dict], seconds: float, steps: int, wait) -> list[dict]:
    import ray

    from esper.runtime.resources import plan_runners
    from esper.simic.ppo.algo import build_ppo_config
    from esper.simic.ppo.train import save_checkpoint

    algo = build_ppo_config(cfg, plan_runners(ray.cluster_resources())).build_algo()
    try:
        rows, restored = _restore(algo, folder, arm, rows)
        if restored:
            seconds, steps = rows[-1]["seconds"], rows[-1]["env_steps"]
        iteration = rows[-1]["iteration"] if rows else 0
        start = time.monotonic()
        while iteration < bench.max_iterations:
            result = algo.train()
            iteration += 1
            steps += int(result["env_runners"].get("num_env_steps_sampled", cfg.ppo.train_batch_size))  # this iteration's
            if iteration % bench.eval_every and iteration < bench.max_iterations:
                continue
            seconds += time.monotonic() - start
            _export(algo, cfg, folder / "agent.pt")
            rows = _log_row(folder, {"iteration": iteration, "env_steps": steps, "seconds": seconds}
                            | _judge(cfg, folder / "agent.pt", wait, bench.eval_seeds))
            save_checkpoint(algo, folder, iteration)
            start = time.monotonic()  # evaluation and checkpointing are not the arm's time
            if rows[-1]["passed"] and bench.until == "bar":
                break
    finally:
        algo.stop()
    return _rows(folder)


def run_benchmark(bench: PretrainBench) -> dict[tuple[str, int], list[dict]]:
    """Every seed × arm on a local Ray cluster (WAIT-only first, in this process); each one's evaluation rows."""
    import ray

    from esper.runtime import local_ray

    bench.out.mkdir(parents=True, exist_ok=True)
    wait = wait_baseline(bench)
    local_ray.init(None, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    results = {}
    try:
        for seed in bench.seeds:
            for arm in bench.arms:
                log.info(f"arm {arm}, seed {seed}")
                results[(arm, seed)] = run_arm(bench, arm, seed, wait)
    finally:
        ray.shutdown()
    return results


def summary(bench: PretrainBench, results: dict, command: str) -> str:
    """The markdown summary: per arm × seed where it reached the bar (or its last evaluation), then medians."""
    lines = ["# PPO to the learning bar: from scratch vs from a BC warm start", "",
             f"`{command}`; bar: PPO − WAIT > 2 paired SE on accuracy and return, {bench.episodes} episodes; "
             f"evaluated every {bench.eval_every} iterations, at most {bench.max_iterations}.", "",
             "| arm | seed | reached the bar | at iteration | env steps | minutes | there: PPO − WAIT accuracy | return "
             "| last evaluation: iteration | accuracy | return |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    medians = {}
    diff = lambda row, k, fmt: f"{format(row[k]['mean'], '+' + fmt)} [{format(row[k]['se'], fmt)}]"
    for (arm, seed), rows in results.items():
        hit = next((r for r in rows if r["passed"]), None)
        last = hit or rows[-1]
        lines.append(f"| {arm} | {seed} | {'yes' if hit else 'no'} | {last['iteration']} | {last['env_steps']} | "
                     f"{last['seconds'] / 60:.1f} | {diff(last, 'accuracy', '.2%')} | {diff(last, 'return', '.3f')} | "
                     f"{rows[-1]['iteration']} | {diff(rows[-1], 'accuracy', '.2%')} | {diff(rows[-1], 'return', '.3f')} |")
        medians.setdefault(arm, []).append((last["env_steps"], last["seconds"] / 60, hit is not None))
    lines += ["", "| arm | seeds reaching the bar | median env steps | median minutes |", "|---|---:|---:|---:|"]
    for arm, xs in medians.items():
        lines.append(f"| {arm} | {sum(x[2] for x in xs)}/{len(xs)} | {statistics.median(x[0] for x in xs):.0f} | "
                     f"{statistics.median(x[1] for x in xs):.1f} |")
    return "\n".join(lines) + "\n"


def write_summary(bench: PretrainBench, results: dict, command: str) -> str:
    """OUT/summary.md and summary.json; the markdown."""
    md = summary(bench, results, command)
    (bench.out / "summary.md").write_text(md)
    (bench.out / "summary.json").write_text(json.dumps({f"{a}-s{s}": r for (a, s), r in results.items()}, indent=2))
    return md
