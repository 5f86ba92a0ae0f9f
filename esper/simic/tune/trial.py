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

from esper.leyline.experiment import set_dotted
from esper.simic.config import TrainTamiyoConfig

OBJECTIVE = "esper/objective"
"""Evaluation final accuracy − objective_rent × final excess parameter ratio (reported once, at the end); with
objective_rent None (world families) the mean evaluation return, each episode paid at its own world's rent."""
TRAIN_OBJECTIVE = "esper/objective_train"
"""The same from the last 50 training episodes (sampled policy), every iteration: what schedulers compare."""
EVAL_PREFIX = "eval/"
EVAL_SEED_BASE = 200_000  # evaluation episode seeds: base, base+1, … (disjoint from evaluate_tamiyo's)
STATE_FILE = "esper_trial.json"


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


def _train_metrics(scalars: dict, objective_rent: float | None) -> dict:
    """The PPO iteration's dashboard scalars (same names in TensorBoard) and the trial's training objective."""
    objective = _objective(scalars["train/final_metric"], scalars["train/excess_param_ratio"],
                           scalars["train/return_mean"], objective_rent)  # NaN if unknown
    return scalars | {TRAIN_OBJECTIVE: objective}


def _evaluate(algo, cfg: TrainTamiyoConfig, episodes: int, objective_rent: float | None, folder: Path,
              version: str) -> dict:
    """Greedy evaluation on fixed seeds; also writes the trial's agent.pt into `folder` (its final checkpoint)."""
    from esper.leyline.features import feature_names
    from esper.simic.env import EsperEnv
    from esper.study.episodes import play_set, summarise
    from esper.tamiyo.agent_file import load_agent, save_agent

    env = EsperEnv(cfg.world)
    save_agent(folder / "agent.pt", algo.get_module().net, env.action_spec, feature_names(env.action_spec),
               cfg.model_dump(mode="json"), version)
    agent = load_agent(folder / "agent.pt")
    summary = summarise(play_set(env, "ppo", [EVAL_SEED_BASE + i for i in range(episodes)], agent))
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
    from esper.simic.ppo.algo import build_ppo_config, load_init_agent, ppo_iteration, warm_start

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
        metrics = _train_metrics(ppo_iteration(algo, cfg)[1], objective_rent)
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
