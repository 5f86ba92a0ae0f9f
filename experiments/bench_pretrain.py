"""Benchmark: env steps and wall-clock for PPO to reach the learning bar — from scratch vs from a BC warm start.

    python experiments/bench_pretrain.py --seeds 0 1 --out runs/bench_pretrain      # hours on 2 CPU cores
    python experiments/bench_pretrain.py --seeds 0 1 --out runs/bench_pretrain --resume

The bar (docs/results.md §5): the greedy policy beats WAIT-only by more than 2 paired standard errors on final
accuracy and on return over 20 evaluation episodes (seeds 100000–100019) of the smoke world. Both arms train PPO
with the same settings (the §5 learning test's: 512 steps per iteration, 128-step minibatches, 8 epochs, lr 1e-3;
`--set` to change them) and are evaluated every --eval-every iterations (in Ray tasks while the env runners
wait; evaluation time is not counted). The `bc` arm first records and clones as the main job does (the smoke
preset's `pretrain:` section): its clock and env steps include the recording, and its clone is evaluated before
PPO's first iteration. An arm stops at its first evaluation that passes, or at --max-iterations (with
`--until max`, only there: to see where each arm gets, e.g. whether PPO from the clone goes beyond it).

Each arm × seed keeps OUT/<arm>-s<seed>/bench.jsonl (one line per evaluation) and a PPO checkpoint at every
evaluation; --resume continues each from there. OUT/summary.md and summary.json compare the arms (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _console import show_progress
from esper.simic.offline.record import FIRST_EVAL_SEED as EVAL_SEED_BASE

LEARNING_TEST = ["ppo.train_batch_size=512", "ppo.minibatch_size=128", "ppo.num_epochs=8", "ppo.lr=0.001"]
ARMS = ("scratch", "bc")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="PPO seeds per arm (default 0 1)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--preset", default="smoke", help="world preset with a pretrain: section (default smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for both arms, after the learning-test PPO settings")
    p.add_argument("--max-iterations", type=int, default=30, help="give up after this many (default %(default)s)")
    p.add_argument("--eval-every", type=int, default=2, help="iterations between evaluations (default %(default)s)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default %(default)s)")
    p.add_argument("--until", choices=["bar", "max"], default="bar",
                   help="stop an arm at its first evaluation that passes (bar, default) or train it to "
                        "--max-iterations regardless (max: where each arm gets, not only when it first passes)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue the benchmark in --out")
    args = p.parse_args()
    if min(args.max_iterations, args.eval_every, args.episodes) < 1:
        p.error("--max-iterations, --eval-every and --episodes must be ≥ 1")
    if args.out.exists() and any(args.out.iterdir()) and not args.resume:
        p.error(f"{args.out} is not empty: --resume to continue it, or choose another --out")
    return args


def _config(args, arm: str, seed: int):
    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.simic.config import TrainTamiyoConfig

    overrides = LEARNING_TEST + args.overrides + [f"seed={seed}", "eval_episodes=0"]
    try:
        cfg = load_preset(args.preset, overrides + (["pretrain=null"] if arm == "scratch" else []), TrainTamiyoConfig)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    if arm == "bc" and cfg.pretrain is None:
        sys.exit(f"error: preset {args.preset!r} has no pretrain: section for the bc arm")
    return cfg


def _play(cfg, agent_path: Path | None, seeds: list[int]) -> list:
    """Greedy episodes of the agent (or WAIT-only when None), in this process."""
    from esper.simic.env import EsperEnv
    from esper.study.episodes import run_episode
    from esper.tamiyo.agent_file import load_agent
    from esper.tamiyo.registry import controller_factory

    env = EsperEnv(cfg.world)
    agent = load_agent(agent_path) if agent_path else None
    make = controller_factory("ppo" if agent else "wait", env.action_spec, agent)
    return [run_episode(env, make(), s) for s in seeds]


def _judge(cfg, agent_path: Path, wait: list, seeds: list[int]) -> dict:
    """The agent's greedy episodes, in parallel Ray tasks of no CPU reservation (PPO's env runners hold the
    cluster's CPUs but wait while the driver evaluates), paired with WAIT-only's."""
    import os

    from esper.study.episodes import evaluate_in_parallel, paired_difference

    chunk = -(-len(seeds) // (os.cpu_count() or 1))
    stats = evaluate_in_parallel(cfg.world, {"ppo": ("ppo", str(agent_path))}, seeds, chunk, num_cpus=0)["ppo"]
    d = {k: paired_difference(stats, wait, k) for k in ("final_metric", "episode_return")}
    return {"accuracy": d["final_metric"], "return": d["episode_return"],
            "passed": d["final_metric"]["beats_by_2se"] and d["episode_return"]["beats_by_2se"]}


def _export(algo, cfg, path: Path) -> None:
    from esper.leyline.features import feature_names
    from esper.tamiyo.agent_file import save_agent
    from esper.tolaria.builder import action_spec

    spec = action_spec(cfg.world)
    save_agent(path, algo.get_module().net, spec, feature_names(spec), cfg.model_dump(mode="json"))


def _log_row(folder: Path, row: dict) -> None:
    with open(folder / "bench.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    a, r = row["accuracy"], row["return"]
    print(f"  {folder.name} iteration {row['iteration']:>2}: {row['env_steps']:>6} env steps, {row['seconds'] / 60:5.1f} min; "
          f"PPO − WAIT accuracy {a['mean']:+.2%} [{a['se']:.2%}], return {r['mean']:+.3f} [{r['se']:.3f}]"
          f"{'  → bar reached' if row['passed'] else ''}", flush=True)


def _warm_start(cfg, folder: Path, rows: list[dict]) -> tuple[float, int]:
    """The bc arm's recording and clone (resumable); its seconds and env steps (the recorded episodes' steps)."""
    from esper.simic.offline.pretrain import warm_start_from_recording
    from esper.simic.offline.record import recorded

    if rows:
        return rows[0]["seconds"], rows[0]["env_steps"]
    _, summary = warm_start_from_recording(cfg, folder, "bench_pretrain.py")
    return summary["seconds"], sum(e["steps"] for e in recorded(folder / "offline"))


def run_arm(args, arm: str, seed: int, wait: list, seeds: list[int]) -> list[dict]:
    """One arm × seed until the bar or the iteration cap; its evaluation rows."""
    import ray

    from esper.runtime.resources import plan_runners
    from esper.simic.ppo.algo import build_ppo_config, warm_start
    from esper.simic.ppo.train import _complete_iteration, _save_checkpoint, latest_checkpoint
    from esper.tamiyo.agent_file import load_agent

    cfg, folder = _config(args, arm, seed), args.out / f"{arm}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    if rows and ((rows[-1]["passed"] and args.until == "bar") or rows[-1]["iteration"] >= args.max_iterations):
        return rows
    seconds, steps = _warm_start(cfg, folder, rows) if arm == "bc" else (0.0, 0)
    if arm == "bc" and not rows:
        _log_row(folder, {"iteration": 0, "env_steps": steps, "seconds": seconds}
                 | _judge(cfg, folder / "pretrain" / "agent.pt", wait, seeds))
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if rows[-1]["passed"] and args.until == "bar":
            return rows
    algo = build_ppo_config(cfg, plan_runners(ray.cluster_resources())).build_algo()
    try:
        checkpoint = latest_checkpoint(folder)
        if checkpoint is not None and rows:
            algo.restore_from_path(str(checkpoint.resolve()))
            rows = [r for r in rows if r["iteration"] <= _complete_iteration(checkpoint)]  # a crash between the two
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            seconds, steps = rows[-1]["seconds"], rows[-1]["env_steps"]
        elif arm == "bc":
            warm_start(algo, load_agent(folder / "pretrain" / "agent.pt"))
        iteration = rows[-1]["iteration"] if rows else 0
        start = time.monotonic()
        while iteration < args.max_iterations:
            result = algo.train()
            iteration += 1
            steps += int(result["env_runners"].get("num_env_steps_sampled", cfg.ppo.train_batch_size))  # this iteration's
            if iteration % args.eval_every and iteration < args.max_iterations:
                continue
            seconds += time.monotonic() - start
            _export(algo, cfg, folder / "agent.pt")
            _log_row(folder, {"iteration": iteration, "env_steps": steps, "seconds": seconds}
                     | _judge(cfg, folder / "agent.pt", wait, seeds))
            _save_checkpoint(algo, folder, iteration)
            start = time.monotonic()  # evaluation and checkpointing are not the arm's time
            if json.loads(path.read_text().splitlines()[-1])["passed"] and args.until == "bar":
                break
    finally:
        algo.stop()
    return [json.loads(line) for line in path.read_text().splitlines()]


def _summary(args, results: dict) -> str:
    lines = ["# PPO to the learning bar: from scratch vs from a BC warm start", "",
             f"`{' '.join(['python', *sys.argv])}`; bar: PPO − WAIT > 2 paired SE on accuracy and return, "
             f"{args.episodes} episodes; evaluated every {args.eval_every} iterations, at most {args.max_iterations}.", "",
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


def main() -> None:
    args = _parse()
    show_progress()
    args.out.mkdir(parents=True, exist_ok=True)
    import ray

    from esper.runtime import local_ray
    from esper.study.episodes import EpisodeStats

    seeds = [EVAL_SEED_BASE + i for i in range(args.episodes)]
    wait_file = args.out / "wait.json"
    if wait_file.is_file():
        wait = [EpisodeStats(**d) for d in json.loads(wait_file.read_text())]
    else:
        from dataclasses import asdict

        print(f"WAIT-only on {args.episodes} evaluation episodes (the baseline every evaluation is paired with)", flush=True)
        wait = _play(_config(args, "scratch", 0), None, seeds)
        wait_file.write_text(json.dumps([asdict(w) for w in wait]))
    local_ray.init(None, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    results = {}
    try:
        for seed in args.seeds:
            for arm in args.arms:
                print(f"arm {arm}, seed {seed}", flush=True)
                results[(arm, seed)] = run_arm(args, arm, seed, wait, seeds)
    finally:
        ray.shutdown()
    md = _summary(args, results)
    (args.out / "summary.md").write_text(md)
    (args.out / "summary.json").write_text(json.dumps({f"{a}-s{s}": r for (a, s), r in results.items()}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
