"""Record episodes of fixed controllers as an offline dataset (Parquet, one row per step) for pretraining Tamiyo.

    python experiments/record_episodes.py --preset smoke --episodes 16 --out runs/offline/smoke \
        --controllers heuristic wait random eps:0.2:heuristic plan:conv_light@block3
    python experiments/record_episodes.py ... --plan-space 1  # also every fixed plan of one seed
    python experiments/record_episodes.py ... --resume        # after a crash: only the missing episodes are played

Every controller plays the same episode seeds (base, base+1, …; below the evaluation seeds, 100,000 and up), in
parallel Ray tasks of a few episodes each. Each finished task's rows are written at once to OUT/steps/ (one
Parquet file, renamed into place when complete) and its episodes to OUT/episodes.jsonl, so a crash loses at most
the tasks in flight. Columns are RLlib's offline names (obs_* / new_obs_* hold the Dict observation flattened,
`actions` the executed factored action) plus returns_to_go and, on every row, the episode's controller, seed,
return and final metric for filtering; OUT/manifest.json records the world, the feature names and the action
layout a pretrained agent must match; OUT/episodes.parquet indexes the episodes. The main job
(ppo_multislot.py with a `pretrain:` section) records the same way, into its run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper.simic.record import FIRST_EVAL_SEED
from esper.tamiyo.registry import names_help


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help="world preset name or YAML (default %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--controllers", nargs="+", default=["heuristic", "eps:0.2:heuristic", "random", "wait"], help=names_help())
    p.add_argument("--plan-space", type=int, default=0, metavar="K",
                   help="also record every fixed plan of 1..K seeds (default 0: none)")
    p.add_argument("--episodes", type=int, default=16, help="episodes per controller (default %(default)s)")
    p.add_argument("--seed-base", type=int, default=0, help="episode seeds: base, base+1, … (default %(default)s)")
    p.add_argument("--chunk", type=int, default=4, help="episodes per Ray task (default %(default)s)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--out", type=Path, required=True, help="dataset folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted recording into the same --out")
    args = p.parse_args()
    if args.episodes < 1 or args.chunk < 1 or args.plan_space < 0:
        p.error("--episodes and --chunk must be ≥ 1, --plan-space ≥ 0")
    if args.seed_base < 0 or args.seed_base + args.episodes > FIRST_EVAL_SEED:
        p.error(f"episode seeds must lie in [0, {FIRST_EVAL_SEED}): evaluation episodes use the seeds from there on")
    return args


def _setup(args):
    """The training config and the controllers' names (checked against the world's plane) — or a one-line error."""
    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.simic.config import TrainTamiyoConfig
    from esper.tamiyo.registry import controller_names
    from esper.tolaria.builder import action_spec

    try:
        cfg = load_preset(args.preset, args.overrides, TrainTamiyoConfig)
        spec = action_spec(cfg.world)  # the plane only: no data loaded here
        return cfg, controller_names(args.controllers, spec, args.plan_space)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"error: {exc}")


def main() -> None:
    from _console import show_progress

    args = _parse()
    cfg, controllers = _setup(args)
    if (args.out / "steps").exists() and not args.resume:
        sys.exit(f"error: {args.out} already holds a recording: --resume to continue it, or choose another --out")
    show_progress()
    import ray

    from esper.runtime import local_ray
    from esper.simic.record import manifest, record, returns_by_controller

    seeds = list(range(args.seed_base, args.seed_base + args.episodes))
    local_ray.init(None, num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        episodes = record(cfg.world, controllers, seeds, args.out,
                          manifest(cfg, controllers, seeds, " ".join(["python", *sys.argv])), args.chunk)
    finally:
        ray.shutdown()
    for c, r in returns_by_controller(episodes).items():
        print(f"{c:<40} {len(r):>4} episodes, mean return {sum(r) / len(r):+.3f}")
    print(f"wrote {args.out / 'episodes.parquet'} and {args.out / 'steps'}/ (read with ray.data.read_parquet)")


if __name__ == "__main__":
    main()
