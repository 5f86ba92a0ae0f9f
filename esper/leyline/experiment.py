"""The experiment config tree: one pydantic root (data, host, plane, trainer, Governor, heuristic),
loadable from YAML presets with dotted command-line overrides (`--set trainer.epochs=12`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from esper.leyline.base import EsperModel
from esper.leyline.config import HostConfig, KasminaConfig


class TrainerConfig(EsperModel):
    """Optimisation settings shared by every arm of an experiment (equal budgets)."""

    epochs: int = Field(10, ge=1)
    """Epochs per run (one controller decision per epoch)."""
    batch_size: int = Field(128, ge=1)
    """Mini-batch size."""
    lr: float = Field(0.05, gt=0)
    """Peak learning rate of the host's SGD."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    weight_decay: float = Field(5e-4, ge=0)
    """SGD weight decay (host and fossilized seeds)."""
    seed_lr: float = Field(0.01, gt=0)
    """Peak learning rate of each live seed's own Adam optimiser."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """LR schedule over `epochs` (applied identically to host and seeds)."""
    augment: bool = True
    """Random crop + horizontal flip on device."""
    max_batches_per_epoch: int | None = Field(None, ge=1)
    """Cap on train batches per epoch (cheap worlds); None = the whole train set."""


class GovernorConfig(EsperModel):
    """When the Governor declares a catastrophe."""

    enabled: bool = True
    """Watch training at all."""
    window: int = Field(5, ge=2)
    """Epoch losses kept for the moving mean and standard deviation."""
    sigma: float = Field(4.0, gt=0)
    """Divergence: loss > mean + sigma·std of the window …"""
    min_rise: float = Field(0.5, ge=0)
    """… and loss > mean·(1 + min_rise) (guards against tiny σ on flat curves)."""
    patience: int = Field(1, ge=1)
    """Consecutive divergent epochs before a rollback (NaN/Inf roll back at once)."""
    min_history: int = Field(3, ge=1)
    """Epochs of history before divergence can be declared."""


class HeuristicConfig(EsperModel):
    """Thresholds of the heuristic controller."""

    warmup_epochs: int = Field(2, ge=0)
    """No germination before this epoch."""
    plateau_window: int = Field(2, ge=1)
    """Epochs over which the accuracy gain is measured."""
    plateau_delta: float = Field(0.01, ge=0)
    """A gain (fraction) below this over the window counts as a plateau."""
    max_live_seeds: int = Field(1, ge=1)
    """Seeds allowed on probation at once."""
    min_epochs_left: int = Field(7, ge=0)
    """Do not start a seed that cannot finish its lifecycle (germinate → train 1 → blend `tempo` → hold → fossilize)."""
    cull_below: float = Field(-0.005, le=0)
    """Cull when the measured contribution is below this (fraction of accuracy)."""
    fossilize_above: float = Field(0.0)
    """Fossilize only with contribution ≥ this."""
    judge_after_epochs: int = Field(1, ge=0)
    """Epochs in BLENDING/HOLDING before a contribution is trusted for culling."""
    max_stage_epochs: int = Field(6, ge=1)
    """A seed stuck longer than this in GERMINATED/TRAINING is culled as stalled."""
    germinate_by_deadline: bool = True
    """Germinate at the last epoch that leaves `min_epochs_left`, if no plateau came and no seed was tried."""
    blueprint_preference: tuple[str, ...] = ("conv_light", "bottleneck", "depthwise", "attention", "norm", "conv_heavy", "mlp")
    """Blueprints in order of preference."""
    tempo: int = Field(3, ge=1)
    """Blend tempo (must be one of the plane's tempos, else the nearest is used)."""
    curve: str = "linear"
    """Blend curve."""


class DataConfig(EsperModel):
    """Where the images come from and how they are split."""

    source: str = "synthetic"
    """'synthetic' (built-in task), 'cifar10' (torchvision download) or a .parquet path."""
    limit: int | None = Field(6000, ge=20)
    """Images drawn from the source (a fixed random subset); None = all."""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Fraction carved from train for validation (fixed split seed, the same for every arm and seed)."""
    eval_data: str | None = None
    """Optional external evaluation set (.parquet), reported separately."""


class ExperimentConfig(EsperModel):
    """Root config of a growth experiment."""

    data: DataConfig = DataConfig()
    """Data source and split."""
    host: HostConfig = HostConfig(preset="tiny")
    """Host network."""
    kasmina: KasminaConfig = KasminaConfig()
    """Morphogenetic plane: gates, blueprints, blend choices."""
    trainer: TrainerConfig = TrainerConfig(epochs=6)
    """Optimisation budget (identical for every arm)."""
    governor: GovernorConfig = GovernorConfig()
    """Catastrophe detection and rollback."""
    heuristic: HeuristicConfig = HeuristicConfig()
    """Heuristic Tamiyo thresholds (also pick the capacity and schedule arms' slot and blueprint)."""
    seeds: list[int] = [0, 1, 2]
    """Training seeds (host init, data order); ≥ 3 for any claim."""
    arms: list[Literal["static", "capacity", "schedule", "heuristic", "ppo"]] = ["static", "capacity", "schedule", "heuristic"]
    """Controllers to compare ('ppo' = the greedy policy in `agent`)."""
    agent: str | None = None
    """agent.pt for the 'ppo' arm (its features must match this plane's slots and blueprints)."""
    schedule_epoch: int = Field(2, ge=0)
    """Germination epoch of the fixed-schedule arm."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda:N'."""

    @model_validator(mode="after")
    def _agent_for_ppo(self) -> "ExperimentConfig":
        if ("ppo" in self.arms) != (self.agent is not None):
            raise ValueError("the 'ppo' arm and `agent` (an agent.pt path) go together")
        return self


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)  # YAML scalars: 12, 0.5, true, [1, 2], null


def format_validation_error(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, model: type[EsperModel] = ExperimentConfig):
    """Validate a YAML preset plus `key.sub=value` overrides; errors name the offending field."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    for item in overrides or []:
        _set_dotted(tree, item)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}") from None
