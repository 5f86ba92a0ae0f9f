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

import sys

from esper.simic.offline.record import FIRST_EVAL_SEED
from esper.study.cli import checked, load, script_parser, show_config, show_progress
from esper.tamiyo.registry import names_help


def _parse():
    p = script_parser(__doc__, preset="smoke", out="(required) the dataset folder", resume=True)
    p.add_argument("--controllers", nargs="+", default=["heuristic", "eps:0.2:heuristic", "random", "wait"], help=names_help())
    p.add_argument("--plan-space", type=int, default=0, metavar="K",
                   help="also record every fixed plan of 1..K seeds (default 0: none)")
    p.add_argument("--episodes", type=int, default=16, help="episodes per controller (default %(default)s)")
    p.add_argument("--seed-base", type=int, default=0, help="episode seeds: base, base+1, … (default %(default)s)")
    p.add_argument("--chunk", type=int, default=4, help="episodes per Ray task (default %(default)s)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    args = p.parse_args()
    if args.out is None:
        p.error("--out (the dataset folder) is required")
    if args.episodes < 1 or args.chunk < 1 or args.plan_space < 0:
        p.error("--episodes and --chunk must be ≥ 1, --plan-space ≥ 0")
    if args.seed_base < 0 or args.seed_base + args.episodes > FIRST_EVAL_SEED:
        p.error(f"episode seeds must lie in [0, {FIRST_EVAL_SEED}): evaluation episodes use the seeds from there on")
    return p, args


def _check(cfg, args) -> list[str]:
    """The world, the controllers (checked against its plane) and --out, before Ray starts: the names to record."""
    from esper.simic.offline.record import open_recording
    from esper.tamiyo.registry import controller_names
    from esper.tolaria.builder import action_spec

    controllers = controller_names(args.controllers, action_spec(cfg.world), args.plan_space)
    open_recording(args.out, cfg.world, args.resume)
    return controllers


def main() -> None:
    from esper.simic.config import TrainTamiyoConfig

    p, args = _parse()
    cfg = load(p, args, TrainTamiyoConfig)
    controllers = checked(lambda: _check(cfg, args))
    show_config(args, cfg)
    show_progress()
    import ray

    from esper.runtime import local_ray
    from esper.simic.offline.record import manifest, record, returns_by_controller

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
