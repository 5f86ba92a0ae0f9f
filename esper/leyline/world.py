"""Configs of the RL world: what one episode trains (WorldConfig) and how Tamiyo is paid (RewardConfig)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from esper.leyline.base import EsperModel
from esper.leyline.config import HostConfig, KasminaConfig
from esper.leyline.experiment import DataConfig, GovernorConfig, TrainerConfig


class RewardConfig(EsperModel):
    """Every reward weight (docs/simic.md, "Reward"); the Tune sweep's search space.

    r_t = acc_weight·Δacc + pbrs_weight·(γ·Φ(s′) − Φ(s)) − rent_lambda·excess_params_ratio/T − cost[op]
          (+ terminal_weight·final_acc at the last step; a Governor rollback ends the episode with −death_penalty)
    """

    acc_weight: float = Field(1.0, ge=0)
    """Weight of the change in validation accuracy (fraction) since the last step."""
    pbrs_weight: float = Field(0.1, ge=0)
    """Weight of the potential-based shaping term."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount used in the shaping term (match PPO's γ to keep optimal policies unchanged)."""
    stage_potentials: dict[str, float] = {
        "DORMANT": 0.0, "GERMINATED": 0.1, "TRAINING": 0.2, "BLENDING": 0.3, "HOLDING": 0.4,
        "FOSSILIZED": 0.5, "CULLED": 0.0, "EMBARGOED": 0.0, "RESETTING": 0.0,
    }
    """Φ contribution of a slot in each stage (Φ(s) = sum over slots)."""
    rent_lambda: float = Field(0.05, ge=0)
    """Rent λ: per episode, λ·(mean excess_params_ratio) is paid (charged per step as λ·ratio/T)."""
    germinate_cost: float = Field(0.002, ge=0)
    """Cost of a GERMINATE action."""
    advance_cost: float = Field(0.0, ge=0)
    """Cost of an ADVANCE action."""
    cull_cost: float = Field(0.002, ge=0)
    """Cost of a CULL action."""
    terminal_weight: float = Field(1.0, ge=0)
    """Weight of the final validation accuracy, paid at the last step."""
    death_penalty: float = Field(1.0, ge=0)
    """Penalty when the Governor rolls back (the episode ends)."""
    invalid_action_penalty: float = Field(0.05, ge=0)
    """Penalty when an action the masks forbid reaches the env (it is executed as WAIT)."""

    @model_validator(mode="after")
    def _all_stages(self) -> "RewardConfig":
        from esper.leyline.stages import Stage

        missing = {s.name for s in Stage} - set(self.stage_potentials)
        extra = set(self.stage_potentials) - {s.name for s in Stage}
        if missing or extra:
            raise ValueError(f"reward.stage_potentials must name every stage exactly (missing {sorted(missing)}, unknown {sorted(extra)})")
        return self


class WorldConfig(EsperModel):
    """One RL episode = one training run of a host on a dataset; one step = one decision point."""

    name: str = "smoke"
    """Preset name (for logs and the agent manifest)."""
    data: DataConfig = DataConfig(source="synthetic", limit=2500, val_fraction=0.2)
    """Dataset of the world."""
    host: HostConfig = HostConfig(preset="tiny")
    """Host network."""
    kasmina: KasminaConfig = KasminaConfig()
    """Plane: gates, blueprints, blend choices (fixes the action space)."""
    trainer: TrainerConfig = TrainerConfig(epochs=16, batch_size=64, max_batches_per_epoch=10, lr=0.1)
    """Training per step; `epochs` is the episode length in decision points."""
    governor: GovernorConfig = GovernorConfig()
    """Catastrophe detection (a rollback ends the episode)."""
    reward: RewardConfig = RewardConfig()
    """Reward weights."""
    val_images: int | None = Field(500, ge=10)
    """Validation images evaluated per step (a fixed subset; None = the whole split)."""
    device: str = "auto"
    """'auto' (the GPU Ray assigned this actor if any, else CPU), 'cpu' or 'cuda:N'."""


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
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount."""
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

    @model_validator(mode="after")
    def _batch_sizes(self) -> "PPOSettings":
        if self.minibatch_size > self.train_batch_size:
            raise ValueError("ppo.minibatch_size must be ≤ ppo.train_batch_size")
        return self


class TrainTamiyoConfig(EsperModel):
    """Root config of `experiments/ppo_multislot.py`."""

    world: WorldConfig = WorldConfig()
    """The environment every EnvRunner builds."""
    ppo: PPOSettings = PPOSettings()
    """PPO and resources."""
    seed: int = 0
    """Seed of PPO, the env runners and the evaluation."""
    eval_episodes: int = Field(8, ge=0)
    """Greedy evaluation episodes (fixed seeds) run in-process after training, reported in the summary."""
