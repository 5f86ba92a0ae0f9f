"""Ray Tune sweeps of the reward economy: one trial = one PPO training of Tamiyo + a fixed-seed evaluation.

The trial is a Tune function trainable: it builds RLlib PPO in its own actor (no extra env runners), reports
every iteration, checkpoints through Tune (so a crashed trial restarts from its last checkpoint and Tuner.restore
resumes an interrupted sweep), and at the end evaluates the greedy policy on fixed episode seeds and reports the
objective Tamiyo should really optimise: final accuracy minus a *fixed* rent on the parameter ratio, the same for
every trial whatever λ it trained with.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ray import tune
from ray.tune.logger import TBXLoggerCallback

from esper.leyline.experiment import set_dotted
from esper.simic import ppo as keys
from esper.simic.config import TrainTamiyoConfig

OBJECTIVE = "esper/objective"
"""Evaluation final accuracy − objective_rent × final excess parameter ratio (reported once, at the end); with
objective_rent None (world families) the mean evaluation return, each episode paid at its own world's rent."""
TRAIN_OBJECTIVE = "esper/objective_train"
"""The same from the last 50 training episodes (sampled policy), every iteration: what schedulers compare."""
EVAL_PREFIX = "eval/"
EVAL_SEED_BASE = 200_000  # evaluation episode seeds: base, base+1, … (disjoint from evaluate_tamiyo's)
STATE_FILE = "esper_trial.json"


class DashboardLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger writing the tags PPO runs write: Tune prefixes every tag with 'ray/tune/', so
    without this a sweep's `train/final_metric` and a PPO run's never share a chart in `tensorboard --logdir runs`."""

    def __init__(self) -> None:
        super().__init__()
        self._writer_cls = self._summary_writer_cls
        self._summary_writer_cls = self._untagged_writer

    def _untagged_writer(self, *args, **kwargs) -> "_Untagged":
        return _Untagged(self._writer_cls(*args, **kwargs))


class _Untagged:
    """A SummaryWriter whose scalar tags lose Tune's prefix."""

    PREFIX = "ray/tune/"

    def __init__(self, writer) -> None:
        self._writer = writer

    def add_scalar(self, tag: str, *args, **kwargs):
        return self._writer.add_scalar(tag.removeprefix(self.PREFIX), *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._writer, name)


def trial_name(trial) -> str:
    """A trial's folder and TensorBoard run name: its swept values first (Tune's default puts them after a long
    prefix, so the dashboards' run list hides them), then Tune's trial id, e.g. `rent_lambda=0.05_4a153_00001`."""
    values = [f"{key.split('.')[-1]}={value:.4g}" if isinstance(value, float) else f"{key.split('.')[-1]}={value}"
              for key, value in trial.config.get("overrides", {}).items()]
    return "_".join([",".join(values), trial.trial_id] if values else [trial.trial_id])


def trial_config(config: dict) -> TrainTamiyoConfig:
    """The trial's TrainTamiyoConfig: the base config with the sampled overrides applied and validated."""
    tree = json.loads(json.dumps(config["base"]))
    for dotted, value in config.get("overrides", {}).items():
        set_dotted(tree, dotted, value)
    return TrainTamiyoConfig.model_validate(tree)


def _objective(accuracy: float, excess_ratio: float, episode_return: float, objective_rent: float | None) -> float:
    """accuracy − objective_rent × excess ratio; the episode return when objective_rent is None (families)."""
    return episode_return if objective_rent is None else accuracy - objective_rent * excess_ratio


def _train_metrics(result: dict, objective_rent: float | None, rent_lambda: float) -> dict:
    """The PPO run's dashboard scalars (same names in TensorBoard), the trial's λ and its training objective."""
    out = keys.training_scalars(result)
    out[TRAIN_OBJECTIVE] = _objective(out["train/final_metric"], out["train/excess_param_ratio"],
                                      out["train/return_mean"], objective_rent)  # NaN if unknown
    out[keys.RENT_SCALAR] = rent_lambda
    return out


def _evaluate(algo, cfg: TrainTamiyoConfig, episodes: int, objective_rent: float | None, folder: Path,
              version: str) -> dict:
    """Greedy evaluation on fixed seeds; also writes the trial's agent.pt into `folder` (its final checkpoint)."""
    from esper.leyline.features import feature_names
    from esper.simic.env import EsperEnv
    from esper.study.episodes import evaluate
    from esper.tamiyo.agent_file import load_agent, save_agent
    from esper.tamiyo.neural import NeuralTamiyo

    env = EsperEnv(cfg.world)
    save_agent(folder / "agent.pt", algo.get_module().net, env.action_spec, feature_names(env.action_spec),
               cfg.model_dump(mode="json"), version)
    agent = load_agent(folder / "agent.pt")
    summary, _ = evaluate(env, NeuralTamiyo(agent), [EVAL_SEED_BASE + i for i in range(episodes)])
    acc, ex = summary["final_metric"]["mean"], summary["final_excess_ratio"]["mean"]
    out = {EVAL_PREFIX + k: summary[k]["mean"] for k in ("final_metric", "episode_return", "germinated", "fossilized",
                                                         "culled", "final_excess_ratio")}
    out[EVAL_PREFIX + "final_metric_se"] = summary["final_metric"]["se"]
    out[OBJECTIVE] = _objective(acc, ex, summary["episode_return"]["mean"], objective_rent)
    return out


def tamiyo_trial(config: dict) -> None:
    """Tune function trainable. config: base (TrainTamiyoConfig dump), overrides ({dotted key: value}),
    iterations, eval_episodes, objective_rent, checkpoint_every, code_version, and for tests fail_once (a
    marker path: the first attempt to pass iteration 2 creates it and raises, as a crashing trial would)."""
    from esper.runtime.resources import RunnerPlan
    from esper.simic.ppo import build_ppo_config, load_init_agent, warm_start

    cfg = trial_config(config)
    plan = RunnerPlan(num_env_runners=0, cpus_per_runner=1.0, gpus_per_runner=0.0, cluster_cpus=0, cluster_gpus=0)
    algo = build_ppo_config(cfg, plan).build_algo()  # env steps in the trial's own actor: one CPU per trial
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            algo.restore_from_path(str(Path(d) / "algo"))
            start = json.loads((Path(d) / STATE_FILE).read_text())["iteration"]
    elif cfg.ppo.init_agent:
        warm_start(algo, load_init_agent(cfg))
    iterations, every = int(config["iterations"]), int(config.get("checkpoint_every", 1))
    for it in range(start + 1, iterations + 1):
        if config.get("fail_once") and it == 2 and not Path(config["fail_once"]).exists():
            Path(config["fail_once"]).touch()
            raise RuntimeError("injected trial failure (fail_once)")
        objective_rent = None if config["objective_rent"] is None else float(config["objective_rent"])
        metrics = _train_metrics(algo.train(), objective_rent, cfg.world.reward.rent_lambda)
        metrics["resumed_from"] = float(start)
        last = it == iterations
        if it % every and not last:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            algo.save_to_path(str(Path(d) / "algo"))
            (Path(d) / STATE_FILE).write_text(json.dumps({"iteration": it}))
            if last:
                metrics |= _evaluate(algo, cfg, int(config["eval_episodes"]), objective_rent, Path(d),
                                     str(config.get("code_version", "unknown")))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    algo.stop()
