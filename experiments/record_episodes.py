"""Record episodes of fixed controllers as an offline dataset (Parquet, one row per step) for pretraining Tamiyo.

    python experiments/record_episodes.py --preset smoke --episodes 16 --out runs/offline/smoke \
        --controllers heuristic wait random eps:0.2:heuristic plan:conv_light@block3
    python experiments/record_episodes.py ... --resume        # after a crash: only the missing episodes are played

Every controller plays the same episode seeds (base, base+1, …; below the evaluation seeds, 100,000 and up), in
parallel Ray tasks of a few episodes each. Each finished task's rows are written at once to OUT/steps/ (one
Parquet file, renamed into place when complete) and its episodes to OUT/episodes.jsonl, so a crash loses at most
the tasks in flight. Columns are RLlib's offline names (obs_* / new_obs_* hold the Dict observation flattened,
`actions` the executed factored action) plus returns_to_go and, on every row, the episode's controller, seed,
return and final metric for filtering; OUT/manifest.json records the world, the feature names and the action
layout a pretrained agent must match; OUT/episodes.parquet indexes the episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from esper.tamiyo.by_name import NAMES_HELP

FIRST_EVAL_SEED = 100_000  # evaluate_tamiyo.py's and the PPO run's evaluation seeds start here


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help="world preset name or YAML (default %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--controllers", nargs="+", default=["heuristic", "eps:0.2:heuristic", "random", "wait"], help=NAMES_HELP)
    p.add_argument("--episodes", type=int, default=16, help="episodes per controller (default %(default)s)")
    p.add_argument("--seed-base", type=int, default=0, help="episode seeds: base, base+1, … (default %(default)s)")
    p.add_argument("--chunk", type=int, default=4, help="episodes per Ray task (default %(default)s)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--out", type=Path, required=True, help="dataset folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted recording into the same --out")
    args = p.parse_args()
    if args.episodes < 1 or args.chunk < 1:
        p.error("--episodes and --chunk must be ≥ 1")
    if args.seed_base < 0 or args.seed_base + args.episodes > FIRST_EVAL_SEED:
        p.error(f"episode seeds must lie in [0, {FIRST_EVAL_SEED}): evaluation episodes use the seeds from there on")
    return args


def _setup(args):
    """The training config and a manifest of what the data fits — or a one-line error."""
    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.leyline.features import feature_names
    from esper.provenance import code_version
    from esper.simic.config import TrainTamiyoConfig
    from esper.tamiyo.by_name import controller_factory
    from esper.tolaria.builder import build_model

    try:
        cfg = load_preset(args.preset, args.overrides, TrainTamiyoConfig)
        spec = build_model(cfg.world).action_spec  # the plane only: no data loaded here
        for name in args.controllers:
            controller_factory(name, spec)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    manifest = {"config": cfg.model_dump(mode="json"), "feature_names": list(feature_names(spec)),
                "action_nvec": [int(n) for n in spec.nvec], "gamma": cfg.world.reward.gamma,
                "controllers": args.controllers, "seeds": [args.seed_base, args.seed_base + args.episodes - 1],
                "code_version": code_version(), "command": " ".join(["python", *sys.argv])}
    return cfg, manifest


def _record_chunk(world_json: dict, controller: str, seeds: list[int], gamma: float, out: str) -> list[dict]:
    """A Ray task: play `seeds` with a fresh `controller`, write their rows to one Parquet file, return the episodes."""
    import pyarrow.parquet as pq

    from esper.leyline.world import WorldConfig
    from esper.simic.env import EsperEnv
    from esper.simic.evaluate import run_episode
    from esper.simic.offline import episode_id, episode_rows, rows_to_table
    from esper.tamiyo.by_name import controller_factory

    env = EsperEnv(WorldConfig.model_validate(world_json))
    make = controller_factory(controller, env.action_spec)
    rows, episodes = [], []
    for seed in seeds:
        steps: list[dict] = []
        stats = run_episode(env, make(), seed, steps=steps)
        rows += episode_rows(steps, stats, controller, env.episode_draw, gamma)
        episodes.append({"eps_id": episode_id(controller, seed), "controller": controller, "episode_seed": seed,
                         "episode_return": stats.episode_return, "final_metric": stats.final_metric, "steps": len(steps),
                         "germinations": stats.germinations, "world": env.episode_draw})
    path = Path(out) / f"{episode_id(controller, seeds[0])}-{len(seeds)}.parquet"
    tmp = path.parent.parent / f".{path.name}.tmp"  # outside steps/, so no reader ever lists it
    pq.write_table(rows_to_table(rows), tmp)
    os.replace(tmp, path)  # a reader never sees half a file
    return episodes


def _done(path: Path, resume: bool) -> set[tuple[str, int]]:
    if not resume or not path.is_file():
        return set()
    return {(e["controller"], e["episode_seed"]) for e in map(json.loads, path.read_text().splitlines())}


def main() -> None:
    args = _parse()
    cfg, manifest = _setup(args)
    steps_dir, index = args.out / "steps", args.out / "episodes.jsonl"
    if (steps_dir.exists() or index.exists()) and not args.resume:
        sys.exit(f"error: {args.out} already holds a recording: --resume to continue it, or choose another --out")
    steps_dir.mkdir(parents=True, exist_ok=True)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    done = _done(index, args.resume)
    seeds = range(args.seed_base, args.seed_base + args.episodes)
    jobs = [(c, chunk) for c in args.controllers
            for chunk in (list(seeds)[i:i + args.chunk] for i in range(0, len(seeds), args.chunk))]
    jobs = [(c, [s for s in chunk if (c, s) not in done]) for c, chunk in jobs]
    jobs = [(c, chunk) for c, chunk in jobs if chunk]
    print(f"recording {sum(len(s) for _, s in jobs)} episodes ({len(done)} already done) of world "
          f"{cfg.world.name!r} in {len(jobs)} tasks into {args.out}", flush=True)
    if jobs:
        _run_tasks(args, cfg, jobs, steps_dir, index)
    _write_index(index, args.out / "episodes.parquet")


def _run_tasks(args, cfg, jobs, steps_dir: Path, index: Path) -> None:
    import ray

    from esper.runtime import local_ray

    local_ray.init(None, num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        task = ray.remote(num_cpus=1)(_record_chunk)
        world, start = cfg.world.model_dump(mode="json"), time.monotonic()
        pending = {task.remote(world, c, s, cfg.world.reward.gamma, str(steps_dir)): (c, s) for c, s in jobs}
        finished = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            controller, chunk = pending.pop(ready[0])
            episodes = ray.get(ready[0])
            with open(index, "a") as f:
                f.writelines(json.dumps(e) + "\n" for e in episodes)
            finished += 1
            mean = sum(e["episode_return"] for e in episodes) / len(episodes)
            print(f"[{finished}/{len(jobs)}] {controller} seeds {chunk[0]}–{chunk[-1]}: mean return {mean:+.3f} "
                  f"({time.monotonic() - start:.0f}s)", flush=True)
    finally:
        ray.shutdown()


def _write_index(index: Path, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    episodes = [json.loads(line) for line in index.read_text().splitlines()]
    rows = [{**e, "germinations": " ".join(e["germinations"]), "world": json.dumps(e["world"], sort_keys=True)}
            for e in episodes]
    pq.write_table(pa.Table.from_pylist(rows), path)
    by = {}
    for e in episodes:
        by.setdefault(e["controller"], []).append(e["episode_return"])
    print("\n".join(f"{c:<24} {len(r):>4} episodes, mean return {sum(r) / len(r):+.3f}" for c, r in by.items()))
    print(f"wrote {path} and {path.parent / 'steps'}/ (read with ray.data.read_parquet)")


if __name__ == "__main__":
    main()
