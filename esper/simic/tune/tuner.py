"""A reward sweep's set-up: its base config and search checked at start-up, Tune's scheduler and Tuner, the warm
start every trial shares. What experiments/tune_rewards.py runs; the trial itself is esper/simic/tune/trial.py."""

from __future__ import annotations

import logging
from pathlib import Path

from esper.simic.config import TrainTamiyoConfig

log = logging.getLogger(__name__)


def sweep_base(sweep) -> TrainTamiyoConfig:
    """The sweep's base training config: its `base` preset with `base_overrides`."""
    from esper.leyline.experiment import load_config, preset_path

    return load_config(preset_path(sweep.base), sweep.base_overrides, model=TrainTamiyoConfig)


def check_search(sweep, base: TrainTamiyoConfig) -> None:
    """ConfigError naming the field, now, if a swept path or value does not fit the training config."""
    from pydantic import ValidationError

    from esper.leyline.experiment import ConfigError, format_validation_error
    from esper.simic.tune.trial import trial_config

    for key, dim in sweep.search.items():
        for v in dim.grid or dim.choice or list(dim.uniform or dim.loguniform):
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


def build_tuner(sweep, base: TrainTamiyoConfig, name: str, storage: str, cluster_cpus: float, resume: bool):
    """Tune's Tuner for the sweep (or the stored one, restored, with `resume`); TensorBoard through Nissa's logger."""
    from ray import tune

    from esper.nissa.tensorboard import DashboardLogger
    from esper.provenance import code_version
    from esper.simic.tune.trial import TRAIN_OBJECTIVE, tamiyo_trial, trial_name

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


def warm_start_once(base: TrainTamiyoConfig, folder: Path, command: str) -> TrainTamiyoConfig:
    """The base's `pretrain:` done once for the whole sweep — one recording, one clone in folder/warm_start/ — and
    the base every trial starts from: that clone as ppo.init_agent."""
    from esper.simic.offline.pretrain import warm_start_from_recording

    log.info(f"warm start for every trial: recording and cloning into {folder / 'warm_start'}")
    path, _ = warm_start_from_recording(base, folder / "warm_start", command)
    tree = base.model_dump(mode="json")
    return TrainTamiyoConfig.model_validate(tree | {"pretrain": None, "ppo": tree["ppo"] | {"init_agent": str(path)}})
