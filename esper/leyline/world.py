"""The world config: what one run trains (task data, host, plane, trainer, Governor) and how Tamiyo is paid for
its decisions in it (RewardConfig). Every driver of a run — RL env, comparison, remote job — reads this one config."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from esper.leyline.base import EsperModel
from esper.leyline.config import CNNHostConfig, KasminaConfig
from esper.leyline.experiment import ConfigError, GovernorConfig, ImageDataConfig, TrainerConfig
from esper.leyline.family import Variation, corner_worlds, with_values
from esper.leyline.registry import HOST_CONFIGS, TASK_CONFIGS, HostConfig, TaskConfig


class RewardConfig(EsperModel):
    """Every reward weight (docs/simic.md, "Reward"); the Tune sweep's search space.

    r_t = acc_weight·Δmetric + pbrs_weight·(γ·Φ(s′) − Φ(s)) − rent_lambda·excess_params_ratio/T
          − compute_rent_lambda·FLOPs_t/B − cost[op]
          (+ terminal_weight·final metric at the last step; a Governor rollback ends the episode with −death_penalty)
    The metric is the task's (validation accuracy, a fraction, for image classification).
    """

    acc_weight: float = Field(1.0, ge=0)
    """Weight of the change in the task's validation metric since the last step (named after the first metric,
    accuracy)."""
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
    compute_rent_lambda: float = Field(0.0, ge=0)
    """Compute rent λ_c: each step pays λ_c × (training FLOPs its epoch spent) / B, B = the run's compute budget
    (trainer.budget_flops or budget_host_epochs; in an equal-epoch world what the bare host spends in all its
    epochs) — the bare host pays λ_c over a whole episode, a host with a seed as big as itself ≈ 2·λ_c."""
    germinate_cost: float = Field(0.002, ge=0)
    """Cost of a GERMINATE action."""
    advance_cost: float = Field(0.0, ge=0)
    """Cost of an ADVANCE action."""
    cull_cost: float = Field(0.002, ge=0)
    """Cost of a CULL action."""
    terminal_weight: float = Field(1.0, ge=0)
    """Weight of the final validation metric, paid at the last step."""
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
    data: SerializeAsAny[TaskConfig] = ImageDataConfig(source="synthetic", limit=2500, val_fraction=0.2)
    """The task and its data (`task` picks it; default image_classification)."""
    host: SerializeAsAny[HostConfig] = CNNHostConfig(preset="tiny")
    """Host network (`name` picks it; default cnn)."""
    kasmina: KasminaConfig = KasminaConfig()
    """Plane: gates, blueprints, blend choices (fixes the action space)."""
    trainer: TrainerConfig = TrainerConfig(epochs=16, batch_size=64, max_batches_per_epoch=10, lr=0.1)
    """Training per step; `epochs` is the episode length in decision points."""
    governor: GovernorConfig = GovernorConfig()
    """Catastrophe detection (a rollback ends the episode)."""
    reward: RewardConfig = RewardConfig()
    """Reward weights."""
    val_images: int | None = Field(500, ge=10)
    """Validation examples evaluated per step (a fixed subset; None = the whole split)."""
    device: str = "auto"
    """'auto' (the GPU Ray assigned this actor if any, else CPU), 'cpu' or 'cuda:N'."""
    vary: dict[str, Variation] = {}
    """A world family: fields drawn anew for every RL episode, by dotted path inside this world — e.g.
    `reward.rent_lambda: {low: 0.003, high: 1, log: true}`, `host.widths: {choice: [[8, 16, 32], [12, 24, 48]]}`,
    `data: {choice: [{source: synthetic, …}, {source: …/train.parquet, limit: 3000}]}`. Empty = one fixed world.
    The plane (`kasmina`) cannot vary: one policy must see the same slots, blueprints and blend choices in every
    world. docs/simic.md, "World families"."""

    @field_validator("host", mode="before")
    @classmethod
    def _host_family(cls, value: Any) -> Any:
        return HOST_CONFIGS.validate(value)

    @field_validator("data", mode="before")
    @classmethod
    def _task_family(cls, value: Any) -> Any:
        return TASK_CONFIGS.validate(value)

    @model_validator(mode="after")
    def _family_draws_valid_worlds(self) -> "WorldConfig":
        """Every choice and both ends of every range must make a valid world (else fail now, naming the path)."""
        fixed = {"kasmina", "vary", "name", "device"}
        for path, value in corner_worlds(self):
            if path.split(".")[0] in fixed:
                raise ValueError(f"vary.{path}: {path.split('.')[0]!r} cannot vary within a family (the plane fixes "
                                 "the action layout one policy plays; name and device are the family's)")
            try:
                with_values(self, {path: value})
            except (ValueError, ConfigError) as exc:
                raise ValueError(f"vary.{path} = {value!r} does not make a valid world: {exc}") from None
        return self
