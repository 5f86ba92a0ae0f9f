"""Configs every run shares (trainer, Governor, the task family) and the loader of YAML presets with dotted
command-line overrides (`--set world.trainer.epochs=12`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from esper.leyline.base import EsperModel
from esper.leyline.registry import TASK_CONFIGS, TaskConfig

M = TypeVar("M", bound=EsperModel)


class TrainerConfig(EsperModel):
    """Optimisation settings shared by every arm of an experiment (equal budgets)."""

    epochs: int = Field(10, ge=1)
    """Epochs per run (one controller decision per epoch)."""
    batch_size: int = Field(128, ge=1)
    """Mini-batch size."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """The host's optimiser (fossilized seeds join it): SGD with Nesterov momentum (CNNs), or AdamW with betas
    (0.9, 0.99) (transformers, as nanoGPT trains them)."""
    lr: float = Field(0.05, gt=0)
    """Peak learning rate of the host's optimiser."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum (unused by AdamW)."""
    weight_decay: float = Field(5e-4, ge=0)
    """Weight decay of the host's optimiser (host and fossilized seeds)."""
    seed_lr: float = Field(0.01, gt=0)
    """Peak learning rate of each live seed's own Adam optimiser."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """LR schedule over `epochs` (applied identically to host and seeds)."""
    augment: bool = True
    """The task's training-time augmentation (images: random crop + horizontal flip, on device); a task
    without one ignores it."""
    max_batches_per_epoch: int | None = Field(None, ge=1)
    """Cap on train batches per epoch (cheap worlds); None = the whole train set."""
    budget_flops: float | None = Field(None, gt=0)
    """Equal-compute runs: the training FLOPs a run may spend (esper/tolaria/flops.py). The run ends once they are
    spent (its last epoch stops at the batch that spends them), the LR schedule runs over them (cosine in the
    fraction spent, set every batch) instead of over `epochs`, and `epochs` only caps the decisions.
    None = equal epochs."""
    budget_host_epochs: float | None = Field(None, gt=0)
    """The same FLOPs budget in units of the bare host's training epoch: a run may spend what the host alone
    spends in this many epochs (resolved when the run starts; not with budget_flops). The RL world's
    compute-budget episodes use this: the budget follows the host and the data."""

    @model_validator(mode="after")
    def _one_budget(self) -> "TrainerConfig":
        if self.budget_flops is not None and self.budget_host_epochs is not None:
            raise ValueError("trainer.budget_flops and trainer.budget_host_epochs are two ways to set one budget: "
                             "give one")
        return self


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


@TASK_CONFIGS.register
class ImageDataConfig(TaskConfig):
    """Image classification (esper.tolaria.image_task): where the images come from and how they are split."""

    task: Literal["image_classification"] = "image_classification"
    """Task family."""
    metric_name: ClassVar[str] = "accuracy"
    source: str = "synthetic"
    """'synthetic' (built-in task), 'cifar10' (torchvision download) or a .parquet path."""
    limit: int | None = Field(6000, ge=20)
    """Images drawn from the source (a fixed random subset); None = all."""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Fraction carved from train for validation (fixed split seed, the same for every arm and seed)."""
    eval_data: str | None = None
    """Optional external evaluation set (.parquet), reported separately."""

    @field_validator("source", "eval_data")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        """A relative .parquet path is made absolute where the config is read: Ray workers and Tune trials run in
        other directories, and the saved config should name the file that was actually read."""
        if value is None or not value.endswith(".parquet") or Path(value).is_absolute():
            return value
        return str(Path(value).resolve())


@TASK_CONFIGS.register
class TextDataConfig(TaskConfig):
    """Next-character prediction on a text file (esper.tolaria.text_task): nanoGPT's character-level setting."""

    task: Literal["char_lm"] = "char_lm"
    """Task family."""
    metric_name: ClassVar[str] = "neg_loss"  # −(validation loss, nats per character): higher is better
    source: str
    """A UTF-8 text file (e.g. ../shared/data/tinyshakespeare/input.txt); its distinct characters are the vocabulary."""
    limit: int | None = Field(None, ge=100)
    """Characters used from the start of the file; None = all."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    """The last fraction of the text is validation (nanoGPT's split: 0.1)."""
    block_size: int = Field(64, ge=2)
    """Context length T of every window (at most the host's block_size)."""
    val_windows: int = Field(200, ge=1)
    """Fixed validation windows, evenly spaced over the validation text (the same for every run)."""

    @field_validator("source")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """Made absolute where the config is read (Ray workers and Tune trials run in other directories)."""
        return str(Path(value).resolve())


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """tree["a"]["b"] = value for key "a.b" (missing sections are created; pydantic validates the result)."""
    node = tree
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = value


def apply_override(tree: dict[str, Any], dotted: str) -> None:
    """Apply one command-line override `key.sub=value` (the value is read as YAML: 12, 0.5, true, [1, 2], null)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {dotted!r}: the value is not valid YAML ({exc})") from None
    set_dotted(tree, key, value)


def format_validation_error(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())


PRESETS = Path(__file__).resolve().parents[2] / "experiments" / "presets"
"""The YAML presets; each one's header comment gives the command that runs it."""


def preset_path(name: str) -> Path:
    """experiments/presets/<name>.yaml, or `name` itself when it is a .yaml/.yml path; unknown → ConfigError."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(q.stem for q in PRESETS.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known: {known} (or give a .yaml path)")
    return path


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, model: type[M]) -> M:
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
        apply_override(tree, item)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}") from None
