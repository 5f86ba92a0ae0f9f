"""The world config: what one run trains (task data, host, plane, trainer, Governor, Emrakul) and how Tamiyo is paid for
its decisions in it (reward). Every driver of a run — RL env, comparison, remote job — reads this one config; each
section's config lives beside the code that reads it, and this module only composes them."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from esper.leyline.base import EsperModel
from esper.emrakul.config import EmrakulConfig
from esper.kasmina.config import KasminaConfig
from esper.kasmina.hosts import CNNHostConfig  # registers the built-in hosts
from esper.leyline.experiment import ConfigError
from esper.leyline.family import Variation, corner_worlds, with_values
from esper.leyline.registry import HOST_CONFIGS, TASK_CONFIGS, HostConfig, TaskConfig
from esper.simic.rewards import RewardConfig
from esper.tolaria.governor import GovernorConfig
from esper.tolaria.image_task import ImageDataConfig
from esper.tolaria.task import build_task  # noqa: F401  (registers the built-in tasks)
from esper.tolaria.trainer import TrainerConfig


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
    emrakul: EmrakulConfig = EmrakulConfig()
    """The reaper: audits of fossils after Tamiyo's decision (off by default)."""
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
    def _audits_can_measure(self) -> "WorldConfig":
        """Emrakul's churn is measured in the epochs a withering seed trains with 0 < α < 1: there must be one."""
        if self.emrakul.enabled and self.kasmina.wither_tempo < 2:
            raise ValueError(f"kasmina.wither_tempo = {self.kasmina.wither_tempo}: Emrakul (emrakul.enabled) needs "
                             "≥ 2, else α jumps from 1 to 0 and no epoch trains the host with and without the seed")
        return self

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
