"""PPO config builder for Tamiyo and the callback that reports Esper's episode metrics."""

from __future__ import annotations

from collections import Counter

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from esper.simic.config import TrainTamiyoConfig
from esper.leyline import Op
from esper.runtime.resources import RunnerPlan
from esper.simic.vector_env import make_esper_env
from esper.simic.ppo.module import TamiyoPPOLearner, TamiyoRLModule

# Namespaced metric keys reported per episode by the env runners.
FINAL_METRIC = "esper/final_metric"
EXCESS_RATIO = "esper/final_excess_ratio"
ROLLBACKS = "esper/rollbacks"
OP_FRACTION = "esper/op_fraction/"
GERMINATED = "esper/seeds_germinated"
FOSSILIZED = "esper/seeds_fossilized"
CULLED = "esper/seeds_culled"
RENT_SCALAR = "world/rent_lambda"  # the λ a run trains with, as a TensorBoard scalar (constant per run)
EPISODE_WINDOW = 50  # metrics are means over the last 50 episodes (not RLlib's default EMA)


class EsperMetricsCallback(RLlibCallback):
    """Logs the final metric, parameter ratio, op distribution and seed counts at each episode's end."""

    def on_episode_end(self, *, episode, metrics_logger=None, env=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        infos = episode.get_infos()
        last = infos[-1] if len(infos) else {}
        if "val_metric" not in last:
            return
        log = lambda key, value: metrics_logger.log_value(key, value, window=EPISODE_WINDOW)
        log(FINAL_METRIC, last["val_metric"])
        log(EXCESS_RATIO, last["excess_ratio"])
        log(ROLLBACKS, float(last["rolled_back"]))
        ops = Counter(i["op"] for i in infos if "op" in i)
        total = max(sum(ops.values()), 1)
        for op in Op:
            log(OP_FRACTION + op.name.lower(), ops.get(op.name, 0) / total)
        counts = last.get("counts", {})
        log(GERMINATED, counts.get("germinate", 0))
        log(FOSSILIZED, counts.get("fossilized", 0))
        log(CULLED, counts.get("culled", 0))


def training_scalars(result: dict, kl_penalty: bool = False) -> dict[str, float]:
    """One PPO iteration's dashboard scalars, named as PPO runs and Tune trials both write them to TensorBoard
    (docs/tune.md): train/… what the sampled policy achieved (means over the last EPISODE_WINDOW episodes; the
    final metric is the task's — accuracy as a fraction, 1.0 = 100 %, or −loss for text; the parameter ratio is a
    fraction), policy/… the learner, ops/… the fraction of decisions of each op. RLlib reports the KL only when the KL penalty is on (`kl_penalty`); NaN = not reported."""
    er, lr = result.get("env_runners", {}), result.get("learners", {}).get("default_policy", {})
    out = {"train/return_mean": er.get("episode_return_mean"), "train/final_metric": er.get(FINAL_METRIC),
           "train/excess_param_ratio": er.get(EXCESS_RATIO), "train/episode_len": er.get("episode_len_mean"),
           "train/germinated": er.get(GERMINATED), "train/fossilized": er.get(FOSSILIZED),
           "policy/entropy": lr.get("entropy"), "policy/value_loss": lr.get("vf_loss")}
    if kl_penalty:
        out["policy/kl"] = lr.get("mean_kl_loss")
    out |= {f"ops/{op.name.lower()}": er.get(OP_FRACTION + op.name.lower()) for op in Op}
    return {k: float(v) if v is not None else float("nan") for k, v in out.items()}


def ppo_iteration(algo, cfg: TrainTamiyoConfig) -> tuple[dict, dict[str, float]]:
    """One PPO iteration — the step the main job's loop and a Tune trial both take: RLlib's `train()`, and the
    iteration's dashboard scalars under the tags both write (training_scalars, and the run's rent λ)."""
    result = algo.train()
    return result, training_scalars(result, cfg.ppo.kl_coeff > 0) | {RENT_SCALAR: cfg.world.reward.rent_lambda}


ESPER_ENV_ID = "esper-world"


def _registered_env() -> str:
    from ray.tune.registry import register_env

    register_env(ESPER_ENV_ID, make_esper_env)
    return ESPER_ENV_ID


def module_config(cfg: TrainTamiyoConfig) -> dict:
    """TamiyoRLModule's model_config: the width, the network, and for the core the layout it reads."""
    if cfg.ppo.network == "mlp":
        return {"hidden": cfg.ppo.hidden}
    from esper.tolaria.builder import action_spec

    out = {"hidden": cfg.ppo.hidden, "network": "core", "action_spec": action_spec(cfg.world).to_dict()}
    if cfg.ppo.frozen_core:
        out |= {"frozen_core": cfg.ppo.frozen_core, "adapter_rank": cfg.ppo.adapter_rank,
                "domain": cfg.ppo.domain or cfg.world.name}
    return out


def check_frozen_core(cfg: TrainTamiyoConfig) -> None:
    """At start-up: ppo.frozen_core is a core file of ppo.hidden's width (ConfigError naming the field)."""
    from esper.leyline.experiment import ConfigError
    from esper.tamiyo.adapter import AdapterError
    from esper.tamiyo.parts import load_core

    if not cfg.ppo.frozen_core:
        return
    try:
        core = load_core(cfg.ppo.frozen_core)
    except AdapterError as exc:
        raise ConfigError(f"ppo.frozen_core: {exc}") from None
    if core.hidden != cfg.ppo.hidden:
        raise ConfigError(f"ppo.frozen_core: the core is {core.hidden} wide, ppo.hidden is {cfg.ppo.hidden}")


def build_ppo_config(cfg: TrainTamiyoConfig, plan: RunnerPlan) -> PPOConfig:
    p = cfg.ppo
    return (
        PPOConfig()
        # A registered factory: with several envs per runner RLlib asks it for one batch-first EsperVectorEnv.
        .environment(_registered_env(), env_config=cfg.world.model_dump(mode="json"))
        .env_runners(
            num_env_runners=plan.num_env_runners,
            num_envs_per_env_runner=p.num_envs_per_env_runner,
            gym_env_vectorize_mode="sync" if p.num_envs_per_env_runner == 1 else "vector_entry_point",
            num_cpus_per_env_runner=plan.cpus_per_runner,
            num_gpus_per_env_runner=plan.gpus_per_runner,
            rollout_fragment_length="auto",
            # A world step trains a model: on a busy machine a fragment can take minutes. RLlib's default (60 s)
            # then returns no samples and the iteration is wasted, so wait longer.
            sample_timeout_s=900.0,
        )
        .learners(num_learners=0, num_gpus_per_learner=0, learner_class=TamiyoPPOLearner)
        .training(
            train_batch_size_per_learner=p.train_batch_size, minibatch_size=p.minibatch_size, num_epochs=p.num_epochs,
            lr=p.lr, gamma=cfg.world.reward.gamma, lambda_=p.lambda_, clip_param=p.clip_param, entropy_coeff=p.entropy_coeff,
            vf_loss_coeff=p.vf_loss_coeff, grad_clip=p.grad_clip, use_kl_loss=p.kl_coeff > 0, kl_coeff=p.kl_coeff,
        )
        .rl_module(rl_module_spec=RLModuleSpec(module_class=TamiyoRLModule, model_config=module_config(cfg)))
        .callbacks(EsperMetricsCallback)
        .resources(num_cpus_for_main_process=0)
        .debugging(seed=cfg.seed)
    )


def load_init_agent(cfg: TrainTamiyoConfig):
    """The agent.pt named by `ppo.init_agent`, checked against this world's features and action heads and the
    configured width (ConfigError naming the field otherwise), so a mismatch fails before Ray starts."""
    from esper.leyline.experiment import ConfigError
    from esper.leyline.features import feature_names
    from esper.tamiyo.agent_file import AgentFileError, load_agent
    from esper.tolaria.builder import action_spec

    spec = action_spec(cfg.world)  # the plane only: no data is loaded at start-up
    try:
        agent = load_agent(cfg.ppo.init_agent, expected_features=feature_names(spec))
    except AgentFileError as exc:
        raise ConfigError(f"ppo.init_agent: {exc}") from None
    if agent.spec.to_dict() != spec.to_dict():
        raise ConfigError(f"ppo.init_agent: {cfg.ppo.init_agent} was trained on another action plane "
                          f"(heads {list(agent.spec.nvec)}, this world {list(spec.nvec)}; slots or blueprints differ)")
    if agent.manifest["network"].get("kind", "mlp_autoregressive") != ("core" if cfg.ppo.network == "core" else "mlp_autoregressive"):
        raise ConfigError(f"ppo.init_agent: {cfg.ppo.init_agent} is a {agent.manifest['network'].get('kind')} "
                          f"network, ppo.network is {cfg.ppo.network!r}")
    if agent.net.hidden != cfg.ppo.hidden:
        raise ConfigError(f"ppo.init_agent: {cfg.ppo.init_agent} has hidden width {agent.net.hidden}, "
                          f"ppo.hidden is {cfg.ppo.hidden}")
    return agent


def warm_start(algo, agent) -> None:
    """Put agent.pt's policy and value weights into the learner's module and every env runner's copy.
    The Adam state starts fresh (agent.pt carries none)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    state = agent.net.state_dict()
    algo.learner_group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID].net.load_state_dict(state))
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True,
                                       timeout_seconds=120.0)
