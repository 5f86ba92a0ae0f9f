"""Sweep Tamiyo's reward economy (rent λ, PBRS weight/γ, action costs, terminal weight) with Ray Tune.

    python experiments/tune_rewards.py --sweep experiments/presets/sweep_rent.yaml           # 8 trials, smoke world
    python experiments/tune_rewards.py --sweep experiments/presets/sweep_rent.yaml --resume  # after Ctrl-C / a crash
    python experiments/tune_rewards.py --sweep sweep.yaml --address auto --storage-path s3://bucket/tune   # cluster
    python experiments/tune_rewards.py --sweep experiments/presets/sweep_rent.yaml --dashboard  # + TensorBoard
    tensorboard --logdir runs/ --host 127.0.0.1                       # the dashboards: trials beside PPO runs

Each trial trains Tamiyo with PPO on the base preset plus its sampled reward fields, then evaluates the greedy
policy on fixed episode seeds. The objective (the same for every trial) is evaluation accuracy − objective_rent ×
parameter ratio (with `objective_rent: null`, for world families, the mean evaluation return: each episode is paid
at its own world's rent). A base with a `pretrain:` section (the smoke preset has one) records and clones once,
before the trials, and every trial fine-tunes that clone (<storage-path>/<name>/warm_start/). Writes into <storage-path>/<name>/: Tune's per-trial results (CSV/JSON/TensorBoard, checkpoints),
trials.csv, report.md, pareto.png, objective_vs_params.png and the best trial's agent.pt. A local cluster runs the
Ray dashboard on 127.0.0.1 (URL printed); --dashboard also serves TensorBoard on 127.0.0.1:--tensorboard-port while
the sweep runs. Which scalar means what: docs/tune.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", type=Path, required=True, help="sweep YAML (see experiments/presets/sweep_*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field, e.g. iterations=2 or scheduler=asha")
    p.add_argument("--name", default=None, help="experiment name (default: the sweep file's stem)")
    p.add_argument("--storage-path", default="runs/tune", help="local folder or cloud URI (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the experiment <storage-path>/<name>")
    p.add_argument("--address", default=None, help="Ray cluster ('auto' = the running one); default: a local one")
    p.add_argument("--report-only", action="store_true", help="rewrite the report of the stored experiment, run nothing")
    p.add_argument("--dashboard", action="store_true",
                   help="serve TensorBoard over the sweep's folder on 127.0.0.1 while it runs (URL printed)")
    p.add_argument("--tensorboard-port", type=int, default=6006, help="port for --dashboard (default %(default)s)")
    p.add_argument("--no-ray-dashboard", dest="ray_dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on 127.0.0.1 for a local cluster)")
    p.add_argument("--print-config", action="store_true", help="print the resolved sweep and exit")
    return p.parse_args()


def _base(sweep):
    from _config import load_preset
    from esper.simic.config import TrainTamiyoConfig

    return load_preset(sweep.base, sweep.base_overrides, TrainTamiyoConfig)


def _check_search(sweep, base) -> None:
    """Fail now, naming the field, if a swept path or value does not fit the training config."""
    from pydantic import ValidationError

    from esper.leyline.experiment import ConfigError, format_validation_error
    from esper.simic.sweep import trial_config

    for key, dim in sweep.search.items():
        values = dim.grid or dim.choice or list(dim.uniform or dim.loguniform)
        for v in values:
            try:
                trial_config({"base": base.model_dump(mode="json"), "overrides": {key: v}})
            except ValidationError as exc:
                raise ConfigError(f"search.{key} = {v}: {format_validation_error(exc)}") from None


def _scheduler(sweep):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if sweep.scheduler == "asha":
        return ASHAScheduler(max_t=sweep.iterations, grace_period=min(sweep.grace_period, sweep.iterations))
    if sweep.scheduler == "pbt":
        mutations = {k: d.to_tune() for k, d in sweep.search.items() if d.grid is None}
        return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=sweep.perturbation_interval,
                                       hyperparam_mutations={"overrides": mutations})
    return FIFOScheduler()


def _tuner(sweep, base, name: str, storage: str, cluster_cpus: float, resume: bool):
    from ray import tune

    from esper.provenance import code_version
    from esper.simic.sweep import TRAIN_OBJECTIVE, DashboardLogger, tamiyo_trial, trial_name

    trainable = tune.with_resources(tamiyo_trial, {"cpu": sweep.trial_cpus})
    if resume:
        return tune.Tuner.restore(f"{storage.rstrip('/')}/{name}", trainable=trainable, resume_errored=True)
    param_space = {"base": base.model_dump(mode="json"), "overrides": {k: d.to_tune() for k, d in sweep.search.items()},
                   "iterations": sweep.iterations, "eval_episodes": sweep.eval_episodes,
                   "objective_rent": sweep.objective_rent, "checkpoint_every": sweep.checkpoint_every,
                   "code_version": code_version()}
    concurrent = sweep.max_concurrent or max(1, int(cluster_cpus // sweep.trial_cpus))
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric=TRAIN_OBJECTIVE, mode="max", num_samples=sweep.num_samples,
                                    scheduler=_scheduler(sweep), max_concurrent_trials=concurrent,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1, callbacks=[DashboardLogger()],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  failure_config=tune.FailureConfig(max_failures=sweep.max_failures)),
    )


def _warm_start_once(base, folder: Path):
    """The base's `pretrain:` done once for the whole sweep — one recording, one clone in folder/warm_start/ — and
    the base every trial starts from: that clone as ppo.init_agent."""
    from esper.simic.config import TrainTamiyoConfig
    from esper.simic.pretrain import warm_start_from_recording

    print(f"warm start for every trial: recording and cloning into {folder / 'warm_start'}", flush=True)
    path, _ = warm_start_from_recording(base, folder / "warm_start", " ".join(["python", *sys.argv]))
    tree = base.model_dump(mode="json")
    return TrainTamiyoConfig.model_validate(tree | {"pretrain": None, "ppo": tree["ppo"] | {"init_agent": str(path)}})


def main() -> None:
    from _console import show_progress

    args = _parse()
    show_progress()
    from esper.leyline.experiment import ConfigError, load_config
    from esper.simic.sweep_config import SweepConfig

    try:
        sweep = load_config(args.sweep, args.overrides, model=SweepConfig)
        base = _base(sweep)
        _check_search(sweep, base)
        if base.ppo.init_agent:
            from esper.simic.ppo import load_init_agent

            load_init_agent(base)  # every trial starts from it: check it fits the world now
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    if args.print_config:
        import yaml

        print(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
        return
    name = args.name or args.sweep.stem
    storage = args.storage_path if "://" in args.storage_path else str(Path(args.storage_path).resolve())
    if (args.resume or args.report_only) and "://" not in storage and not (Path(storage) / name).is_dir():
        sys.exit(f"error: nothing to resume at {Path(storage) / name}")
    import ray

    from esper.nissa.dashboards import TensorBoard, tensorboard_command
    from esper.runtime import local_ray

    # a local cluster listens on loopback only and needs the token (docs/security.md); --address: that cluster's
    local = args.address is None
    context = local_ray.init(args.address, include_dashboard=args.ray_dashboard if local else None,
                             configure_logging=True, logging_level="WARNING")
    if local and args.ray_dashboard:
        print(local_ray.dashboard_message(context), flush=True)
    board = None
    try:
        if base.pretrain is not None and not (args.resume or args.report_only):
            base = _warm_start_once(base, Path(storage) / name if "://" not in storage else Path("runs/tune") / name)
        tuner = _tuner(sweep, base, name, storage, ray.cluster_resources().get("CPU", 1), args.resume or args.report_only)
        folder = Path(storage) / name
        if args.dashboard and "://" not in storage:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                board = TensorBoard(folder, port=args.tensorboard_port)
            except RuntimeError as exc:  # e.g. the port is taken
                sys.exit(f"error: {exc}")
            print(f"TensorBoard: {board.url}  (serving {folder}; stops with the sweep)", flush=True)
        else:
            print(f"TensorBoard: {tensorboard_command(folder)}", flush=True)
        grid = tuner.get_results() if args.report_only else tuner.fit()
    finally:
        if board is not None:
            board.stop()
        ray.shutdown()
    from esper.simic.sweep import OBJECTIVE
    from esper.simic.sweep_report import write_report

    finished = sum(1 for r in grid if r.metrics and OBJECTIVE in r.metrics)
    resume = " ".join(["python", *sys.argv, *([] if args.resume else ["--resume"])])
    if finished == 0:
        sys.exit(f"no trial has finished yet, so there is nothing to report; continue with:\n  {resume}")
    if finished < len(grid):
        print(f"{finished} of {len(grid)} trials finished; the report covers those. Continue the rest with:\n  {resume}")
    out = Path(storage) / name if "://" not in storage else Path("runs/tune") / name
    metric = type(_base(sweep).world.data).metric_name  # the task's: accuracy, or −loss for text
    report = write_report(grid, sweep, out, command=" ".join(["python", *sys.argv]), metric=metric)
    print(report)


if __name__ == "__main__":
    main()
