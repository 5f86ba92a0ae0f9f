"""Train Tamiyo with RLlib PPO over factored, masked action heads — the main job.

    python experiments/ppo_multislot.py                                  # smoke world, local, offline, ≤ 10 min
    python experiments/ppo_multislot.py --preset smoke --iterations 60 --output runs/ppo/long
    python experiments/ppo_multislot.py --resume runs/ppo/long            # continue from its checkpoint
    python experiments/ppo_multislot.py --preset cifar10 --address auto   # on a Ray cluster (see docs/cluster.md)
    python experiments/ppo_multislot.py --set ppo.lr=1e-3 --set world.reward.rent_lambda=0.1
    python experiments/ppo_multislot.py --set pretrain=null --set ppo.init_agent=runs/ppo/long/agent.pt --set world.reward.rent_lambda=0.3
                                                                          # fine-tune a trained Tamiyo

Each EnvRunner is an env actor training its own host (pinned to a GPU when the cluster has GPUs). Writes to
--output: checkpoint/ (RLlib, resumable), agent.pt (the trained Tamiyo), progress.jsonl, summary.json/.md and
TensorBoard events (`tensorboard --logdir runs/`: PPO runs beside Tune trials; docs/tune.md). A local cluster
runs the Ray dashboard on 127.0.0.1 (URL printed; --no-ray-dashboard to skip it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _console import show_progress


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help="world preset name (experiments/presets/<name>.yaml) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--iterations", type=int, default=None, help="PPO iterations (overrides ppo.iterations)")
    p.add_argument("--seed", type=int, default=None, help="seed (overrides the preset's)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' = the running cluster); default: a local one")
    p.add_argument("--num-env-runners", type=int, default=None, help="env actors (default: sized from the cluster)")
    p.add_argument("--envs-per-runner", type=int, default=None, metavar="N",
                   help="worlds per env actor, trained batch-first over one data stream (ppo.num_envs_per_env_runner)")
    p.add_argument("--output", type=Path, default=None, help="output folder (default runs/ppo/<preset>-<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.add_argument("--no-ray-dashboard", dest="ray_dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on 127.0.0.1 for a local cluster; URL printed)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p.parse_args()


def _config(args: argparse.Namespace):
    from _config import load_preset
    from esper.leyline.experiment import ConfigError
    from esper.simic.config import TrainTamiyoConfig
    from esper.simic.train import latest_checkpoint

    overrides = list(args.overrides)
    if args.resume is not None:
        saved = args.resume / "config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.json there (not an Esper PPO run folder)")
        cfg = TrainTamiyoConfig.model_validate(json.loads(saved.read_text()))
        if latest_checkpoint(args.resume) is None and cfg.pretrain is None:
            raise ConfigError(f"--resume {args.resume}: no complete checkpoint/ there to continue from")
        if args.iterations is not None:
            cfg.ppo.iterations = args.iterations
        return cfg
    if args.iterations is not None:
        overrides.append(f"ppo.iterations={args.iterations}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.num_env_runners is not None:
        overrides.append(f"ppo.num_env_runners={args.num_env_runners}")
    if args.envs_per_runner is not None:
        overrides.append(f"ppo.num_envs_per_env_runner={args.envs_per_runner}")
    return load_preset(args.preset, overrides, TrainTamiyoConfig)


def main() -> None:
    args = _parse()
    show_progress()
    from esper.leyline.experiment import ConfigError

    try:
        cfg = _config(args)
        from esper.tolaria.builder import action_spec

        spec = action_spec(cfg.world)  # the plane and host must build (blueprints that fit no point fail here)
        if cfg.pretrain is not None:
            from esper.tamiyo.registry import controller_names

            try:
                controller_names(cfg.pretrain.controllers, spec)
            except ValueError as exc:
                raise ConfigError(f"pretrain.controllers: {exc}") from None
        init_agent = None
        if cfg.ppo.init_agent and args.resume is None:  # a resumed run continues from its own checkpoint
            from esper.simic.ppo import load_init_agent

            init_agent = load_init_agent(cfg)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    if args.print_config:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return
    from esper.runtime.cluster import ClusterCapacityError
    from esper.simic.train import train_tamiyo

    out = args.resume or args.output or Path("runs/ppo") / f"{cfg.world.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        summary = train_tamiyo(cfg, out, address=args.address, resume=args.resume is not None, init_agent=init_agent,
                               ray_dashboard=args.ray_dashboard, command=" ".join(["python", *sys.argv]))
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted: the last checkpoint in {out}/checkpoint is intact; continue with --resume {out}")
    except ClusterCapacityError as exc:
        sys.exit(f"error: {exc}")
    except ConnectionError as exc:  # --address pointing at no running cluster
        sys.exit(f"error: could not connect to the Ray cluster at {args.address!r}: {exc}")
    print(f"\n{summary}")


if __name__ == "__main__":
    main()
