"""Train Tamiyo with RLlib PPO over factored, masked action heads — the main job.

    python experiments/ppo_multislot.py                                  # smoke world, local, offline, ≤ 10 min
    python experiments/ppo_multislot.py --preset smoke --iterations 60 --out runs/ppo/long
    python experiments/ppo_multislot.py --out runs/ppo/long --resume        # continue from its checkpoint
    python experiments/ppo_multislot.py --preset cifar10 --address auto   # on a Ray cluster (see docs/cluster.md)
    python experiments/ppo_multislot.py --set ppo.lr=1e-3 --set world.reward.rent_lambda=0.1
    python experiments/ppo_multislot.py --set pretrain=null --set ppo.init_agent=runs/ppo/long/agent.pt --set world.reward.rent_lambda=0.3
                                                                          # fine-tune a trained Tamiyo

Each EnvRunner is an env actor training its own host (pinned to a GPU when the cluster has GPUs). Writes to
--out: checkpoint/ (RLlib, resumable), agent.pt (the trained Tamiyo), progress.jsonl, summary.json/.md and
TensorBoard events (`tensorboard --logdir runs/`: PPO runs beside Tune trials; docs/tune.md). A local cluster
runs the Ray dashboard on 127.0.0.1 (URL printed; --no-ray-dashboard to skip it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from esper.study.cli import check_world, checked, fail, load, script_parser, show_config, show_progress


def _parse():
    p = script_parser(__doc__, preset="smoke", out="runs/ppo/<world>-<time>", resume=True)
    p.add_argument("--iterations", type=int, default=None, help="PPO iterations (= --set ppo.iterations=N)")
    p.add_argument("--seed", type=int, default=None, help="seed (= --set seed=N)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' = the running cluster); default: a local one")
    p.add_argument("--num-env-runners", type=int, default=None, help="env actors (default: sized from the cluster)")
    p.add_argument("--envs-per-runner", type=int, default=None, metavar="N",
                   help="worlds per env actor, trained batch-first over one data stream (ppo.num_envs_per_env_runner)")
    p.add_argument("--no-ray-dashboard", dest="ray_dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on 127.0.0.1 for a local cluster; URL printed)")
    args = p.parse_args()
    if args.resume and args.out is None:
        p.error("--resume needs the --out folder of the run to continue")
    for flag, key in ((args.iterations, "ppo.iterations"), (args.seed, "seed"),
                      (args.num_env_runners, "ppo.num_env_runners"), (args.envs_per_runner, "ppo.num_envs_per_env_runner")):
        if flag is not None:
            args.overrides.append(f"{key}={flag}")
    return p, args


def _config(p, args):
    """The run's config: the preset with its overrides, or on --resume the run's own (only its iterations may
    grow), checked whole before Ray starts."""
    from esper.simic.config import TrainTamiyoConfig
    from esper.simic.ppo.train import latest_checkpoint

    if not args.resume:
        return load(p, args, TrainTamiyoConfig)
    saved = args.out / "config.json"
    if not saved.is_file():
        fail(f"--resume {args.out}: no config.json there (not an Esper PPO run folder)")
    cfg = TrainTamiyoConfig.model_validate(json.loads(saved.read_text()))
    if latest_checkpoint(args.out) is None and cfg.pretrain is None:
        fail(f"--resume {args.out}: no complete checkpoint/ there to continue from")
    if args.iterations is not None:
        cfg.ppo.iterations = args.iterations
    return cfg


def _check(cfg, resume: bool):
    """The world, the recording's controllers and the starting agent fit together (one line naming the field)."""
    from esper.leyline.experiment import ConfigError
    from esper.simic.ppo.algo import check_frozen_core, load_init_agent
    from esper.tamiyo.registry import controller_names
    from esper.tolaria.builder import action_spec

    check_world(cfg.world)
    check_frozen_core(cfg)
    if cfg.pretrain is not None:
        try:
            controller_names(cfg.pretrain.controllers, action_spec(cfg.world))
        except ValueError as exc:
            raise ConfigError(f"pretrain.controllers: {exc}") from None
    return load_init_agent(cfg) if cfg.ppo.init_agent and not resume else None  # a resumed run has its checkpoint


def main() -> None:
    p, args = _parse()
    show_progress()
    cfg = _config(p, args)
    init_agent = checked(lambda: _check(cfg, args.resume))
    show_config(args, cfg)
    from esper.runtime.cluster import ClusterCapacityError
    from esper.simic.ppo.train import train_tamiyo

    out = args.out or Path("runs/ppo") / f"{cfg.world.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        summary = train_tamiyo(cfg, out, address=args.address, resume=args.resume, init_agent=init_agent,
                               ray_dashboard=args.ray_dashboard, command=" ".join(["python", *sys.argv]))
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted: the last checkpoint in {out}/checkpoint is intact; continue with --out {out} --resume")
    except ClusterCapacityError as exc:
        fail(str(exc))
    except ConnectionError as exc:  # --address pointing at no running cluster
        fail(f"could not connect to the Ray cluster at {args.address!r}: {exc}")
    print(f"\n{summary}")


if __name__ == "__main__":
    main()
