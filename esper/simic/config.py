"""Config of training Tamiyo with PPO (experiments/ppo_multislot.py): the world, PPO's settings, the seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from esper.leyline.base import EsperModel
from esper.world import WorldConfig


class PPOSettings(EsperModel):
    """RLlib PPO hyperparameters and resources for training Tamiyo."""

    iterations: int = Field(12, ge=1)
    """Training iterations (each collects `train_batch_size` env steps, then updates)."""
    train_batch_size: int = Field(256, ge=16)
    """Env steps per iteration."""
    minibatch_size: int = Field(64, ge=8)
    """SGD minibatch size."""
    num_epochs: int = Field(6, ge=1)
    """SGD passes over each iteration's batch."""
    lr: float = Field(3e-4, gt=0)
    """Adam learning rate."""
    lambda_: float = Field(0.95, ge=0, le=1)
    """GAE λ."""
    clip_param: float = Field(0.2, gt=0)
    """PPO ratio clip."""
    entropy_coeff: float = Field(0.01, ge=0)
    """Entropy bonus (of the factored, masked distribution)."""
    kl_coeff: float = Field(0.0, ge=0)
    """Initial coefficient of RLlib's adaptive KL penalty; 0 = ratio clipping only (as CleanRL), which moved the
    policy faster on our worlds than the penalty that grows whenever an iteration's KL beats its target."""
    vf_loss_coeff: float = Field(0.5, ge=0)
    """Value loss weight."""
    grad_clip: float = Field(0.5, gt=0)
    """Global gradient-norm clip."""
    hidden: int = Field(128, ge=8)
    """Width of the policy and value MLPs."""
    network: Literal["mlp", "core"] = "mlp"
    """mlp: the flat policy sized by the world's layout (every agent so far); core: the layout-free Tamiyo core
    (`esper/tamiyo/core.py`), whose weights do not depend on the slots or blueprints (offline warm starts: mlp only)."""
    frozen_core: str | None = None
    """core.pt of a trained core (a `network: core` run writes one): the core is loaded and frozen and PPO trains
    only a small per-domain adapter on it (`esper/tamiyo/adapter.py`; agent.pt then holds core + adapter, and
    adapter.pt the adapter alone). Needs `network: core` and the core's width as `hidden`; on a cluster the path
    must be readable on every node."""
    adapter_rank: int = Field(2, ge=1, le=64)
    """Rank of the adapter's low-rank weight deltas (2 keeps it ≤ 5 % of a 128-wide core)."""
    domain: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """The adapter's domain name, by which Serve routes requests (None: the world's name)."""
    num_env_runners: int | None = Field(None, ge=0)
    """EnvRunner actors (the env actors); None = sized from the cluster's CPUs."""
    num_envs_per_env_runner: int = Field(1, ge=1)
    """Worlds each EnvRunner steps; above 1 they are one batch-first EsperVectorEnv (shared data stream)."""
    gpus_per_env_runner: float | None = Field(None, ge=0)
    """GPU share of each EnvRunner; None = spread the cluster's GPUs over the runners (0 without GPUs)."""
    cluster_wait_s: float = Field(900.0, gt=0)
    """On an attached cluster (--address) that lacks room for the runners: how long to wait for its autoscaler
    to add nodes before failing with what is missing (cloud GPU nodes take minutes to boot)."""
    checkpoint_every: int = Field(5, ge=1)
    """Write an RLlib checkpoint every this many iterations (and at the end)."""
    init_agent: str | None = None
    """agent.pt to start from (policy and value weights; the optimiser starts fresh): fine-tuning a trained
    Tamiyo under another reward, or a curriculum. Must match this world's features and action heads and
    `hidden`; a relative path is taken from the directory the command runs in."""

    @field_validator("init_agent")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # Tune runs trials in their own directories: resolve against the user's working directory now.
        return None if path is None else str(Path(path).expanduser().resolve())

    @field_validator("frozen_core")
    @classmethod
    def _readable_core(cls, path: str | None) -> str | None:
        if path is None:
            return None
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise ValueError(f"no core file at {resolved}")
        return str(resolved)

    @model_validator(mode="after")
    def _adapter_needs_the_core(self) -> "PPOSettings":
        if self.frozen_core and self.network != "core":
            raise ValueError("ppo.frozen_core trains an adapter on a core: set ppo.network=core")
        if self.frozen_core and self.init_agent:
            raise ValueError("ppo.frozen_core and ppo.init_agent both give PPO its start: set one")
        return self

    @model_validator(mode="after")
    def _batch_sizes(self) -> "PPOSettings":
        if self.minibatch_size > self.train_batch_size:
            raise ValueError("ppo.minibatch_size must be ≤ ppo.train_batch_size")
        return self


class PretrainSettings(EsperModel):
    """A warm start learned in the run (esper/simic/offline/pretrain.py): record controllers' episodes, clone the best of
    them with RLlib BC, and let PPO fine-tune the clone."""

    controllers: list[str] = ["random", "heuristic", "eps:0.2:heuristic"]
    """Controllers to record, by name (wait, random, heuristic, plan:…, eps:ε:NAME; esper/tamiyo/registry.py)."""
    plan_space: int = Field(1, ge=0)
    """Also record every fixed plan of 1..plan_space seeds (0: none)."""
    episodes: int = Field(4, ge=1, le=50_000)
    """Episodes per controller (seeds 0, 1, …: below the validation and evaluation seeds)."""
    top_pct: float = Field(25.0, gt=0, le=100)
    """Clone the best this-% of the recorded episodes by return (filtered behaviour cloning)."""
    iterations: int = Field(200, ge=1)
    """BC gradient steps."""
    batch_size: int = Field(256, ge=8)
    """Steps per BC gradient step."""
    lr: float = Field(1e-3, gt=0)
    """BC's Adam learning rate."""
    validation_episodes: int = Field(10, ge=0)
    """After PPO, the fine-tuned agent and the clone play greedily on this many validation seeds (50,000…, apart
    from the recording's and the evaluation's); agent.pt is the clone if it earns the higher mean return, the
    fine-tuned agent is kept as finetuned_agent.pt either way (0: no check, agent.pt is the fine-tuned agent)."""

    @field_validator("controllers")
    @classmethod
    def _named(cls, names: list[str]) -> list[str]:
        from esper.tamiyo.registry import controller_factory

        for name in names:
            controller_factory(name)  # the syntax now; plans are checked against the plane at start-up
        return names


class TrainTamiyoConfig(EsperModel):
    """Root config of `experiments/ppo_multislot.py`."""

    world: WorldConfig = WorldConfig()
    """The environment every EnvRunner builds."""
    ppo: PPOSettings = PPOSettings()
    """PPO and resources."""
    seed: int = 0
    """Seed of PPO, the env runners and the evaluation."""
    eval_episodes: int = Field(8, ge=0)
    """Greedy evaluation episodes (fixed seeds) after training, against WAIT-only, random and the heuristic on the
    same seeds (paired differences in the summary)."""
    pretrain: PretrainSettings | None = None
    """Start PPO from a behaviour clone of recorded episodes, recorded and cloned in this run (None: from scratch)."""

    @model_validator(mode="before")
    @classmethod
    def _one_discount(cls, tree: Any) -> Any:
        """PPO discounts with `world.reward.gamma`, the discount the stage shaping is policy-invariant under: one γ.
        Configs written when PPO had its own `ppo.gamma` (agent files, run folders) still load when the two agree
        (or only PPO's was given); when they differ, the error names both."""
        if not isinstance(tree, dict) or not isinstance(tree.get("ppo"), dict) or "gamma" not in tree["ppo"]:
            return tree
        ppo = dict(tree["ppo"])
        old = ppo.pop("gamma")
        world = tree.get("world") or {}
        world = world.model_dump() if isinstance(world, BaseModel) else dict(world)
        reward = dict(world.get("reward") or {})
        if reward.setdefault("gamma", old) != old:
            raise ValueError(f"ppo.gamma ({old}) differs from world.reward.gamma ({reward['gamma']}): PPO now "
                             "discounts with world.reward.gamma only; drop ppo.gamma")
        return {**tree, "ppo": ppo, "world": {**world, "reward": reward}}

    @model_validator(mode="after")
    def _one_start(self) -> "TrainTamiyoConfig":
        if self.pretrain is not None and self.ppo.init_agent:
            raise ValueError("pretrain and ppo.init_agent both give PPO its start: set one (pretrain=null to drop it)")
        return self

    @model_validator(mode="after")
    def _families_step_alone(self) -> "TrainTamiyoConfig":
        if self.world.vary and self.ppo.num_envs_per_env_runner > 1:
            raise ValueError("ppo.num_envs_per_env_runner must be 1 with a world family (world.vary): the batch-first "
                             "vector env trains its worlds on one shared data stream")
        return self
