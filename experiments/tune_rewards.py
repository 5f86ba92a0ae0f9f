"""Sweep Tamiyo's reward economy (rent λ, PBRS weight/γ, action costs, terminal weight) with Ray Tune.

    python experiments/tune_rewards.py --preset sweep_rent           # 8 trials, smoke world
    python experiments/tune_rewards.py --preset sweep_rent --resume  # after Ctrl-C / a crash
    python experiments/tune_rewards.py --preset sweep.yaml --address auto --out s3://bucket/tune   # cluster
    python experiments/tune_rewards.py --preset sweep_rent --dashboard  # + TensorBoard
    tensorboard --logdir runs/ --host 127.0.0.1                       # the dashboards: trials beside PPO runs

Each trial trains Tamiyo with PPO on the base preset plus its sampled reward fields, then evaluates the greedy
policy on fixed episode seeds. The objective (the same for every trial) is evaluation accuracy − objective_rent ×
parameter ratio (with `objective_rent: null`, for world families, the mean evaluation return: each episode is paid
at its own world's rent). A base with a `pretrain:` section (the smoke preset has one) records and clones once,
before the trials, and every trial fine-tunes that clone (<out>/<name>/warm_start/). Writes into <out>/<name>/: Tune's per-trial results (CSV/JSON/TensorBoard, checkpoints),
trials.csv, report.md, pareto.png, objective_vs_params.png and the best trial's agent.pt. A local cluster runs the
Ray dashboard on 127.0.0.1 (URL printed); --dashboard also serves TensorBoard on 127.0.0.1:--tensorboard-port while
the sweep runs. Which scalar means what: docs/tune.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper.study.cli import checked, fail, show_progress


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, metavar="NAME|PATH", help="sweep preset (experiments/presets/sweep_*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field, e.g. iterations=2 or scheduler=asha")
    p.add_argument("--name", default=None, help="experiment name (default: the sweep preset's name)")
    p.add_argument("--out", default="runs/tune", metavar="FOLDER|URI", help="storage: local folder or cloud URI (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the experiment <out>/<name>")
    p.add_argument("--address", default=None, help="Ray cluster ('auto' = the running one); default: a local one")
    p.add_argument("--report-only", action="store_true", help="rewrite the report of the stored experiment, run nothing")
    p.add_argument("--dashboard", action="store_true",
                   help="serve TensorBoard over the sweep's folder on 127.0.0.1 while it runs (URL printed)")
    p.add_argument("--tensorboard-port", type=int, default=6006, help="port for --dashboard (default %(default)s)")
    p.add_argument("--no-ray-dashboard", dest="ray_dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on 127.0.0.1 for a local cluster)")
    p.add_argument("--print-config", action="store_true", help="print the resolved sweep and exit")
    return p.parse_args()


def _setup(args):
    """The sweep and its base, checked whole (search paths and values, the warm-start agent, the world)."""
    from esper.leyline.experiment import load_config, preset_path
    from esper.simic.ppo.algo import load_init_agent
    from esper.simic.tune.config import SweepConfig
    from esper.simic.tune.tuner import check_search, sweep_base
    from esper.study.cli import check_world

    sweep = load_config(preset_path(args.preset), args.overrides, model=SweepConfig)
    base = sweep_base(sweep)
    check_search(sweep, base)
    check_world(base.world)
    if base.ppo.init_agent:
        load_init_agent(base)  # every trial starts from it: check it fits the world now
    return sweep, base


def main() -> None:
    args = _parse()
    show_progress()
    sweep, base = checked(lambda: _setup(args))
    if args.print_config:
        import yaml

        print(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
        return
    name = args.name or Path(args.preset).stem
    storage = args.out if "://" in args.out else str(Path(args.out).resolve())
    local_folder = Path(storage) / name if "://" not in storage else Path("runs/tune") / name
    if (args.resume or args.report_only) and "://" not in storage and not local_folder.is_dir():
        fail(f"nothing to resume at {local_folder}")
    grid = _run(args, sweep, base, name, storage, local_folder)
    from esper.simic.tune.trial import OBJECTIVE
    from esper.simic.tune.report import write_report

    finished = sum(1 for r in grid if r.metrics and OBJECTIVE in r.metrics)
    resume = " ".join(["python", *sys.argv, *([] if args.resume else ["--resume"])])
    if finished == 0:
        sys.exit(f"no trial has finished yet, so there is nothing to report; continue with:\n  {resume}")
    if finished < len(grid):
        print(f"{finished} of {len(grid)} trials finished; the report covers those. Continue the rest with:\n  {resume}")
    metric = type(base.world.data).metric_name  # the task's: accuracy, or −loss for text
    print(write_report(grid, sweep, local_folder, command=" ".join(["python", *sys.argv]), metric=metric))


def _run(args, sweep, base, name: str, storage: str, folder: Path):
    """Ray up (a local cluster on loopback with its token, or --address), the warm start, the sweep; Ray down."""
    import ray

    from esper.nissa.dashboards import TensorBoard, tensorboard_command
    from esper.runtime import local_ray
    from esper.simic.tune.tuner import build_tuner, warm_start_once

    local = args.address is None
    context = local_ray.init(args.address, include_dashboard=args.ray_dashboard if local else None,
                             configure_logging=True, logging_level="WARNING")
    if local and args.ray_dashboard:
        print(local_ray.dashboard_message(context), flush=True)
    board = None
    try:
        if base.pretrain is not None and not (args.resume or args.report_only):
            base = warm_start_once(base, folder, " ".join(["python", *sys.argv]))
        tuner = build_tuner(sweep, base, name, storage, ray.cluster_resources().get("CPU", 1), args.resume or args.report_only)
        if args.dashboard and "://" not in storage:
            folder.mkdir(parents=True, exist_ok=True)
            board = checked(lambda: TensorBoard(folder, port=args.tensorboard_port), RuntimeError)  # e.g. port taken
            print(f"TensorBoard: {board.url}  (serving {folder}; stops with the sweep)", flush=True)
        else:
            print(f"TensorBoard: {tensorboard_command(folder)}", flush=True)
        return tuner.get_results() if args.report_only else tuner.fit()
    finally:
        if board is not None:
            board.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
