"""Typed telemetry events (one row each in Parquet) and namespaced metric keys."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from esper.leyline.base import EsperModel

# Namespaced metric keys: use these constants, never string literals, when logging.
SEEDS_ACTIVE = "seeds/active"
SEEDS_FOSSILIZED = "seeds/fossilized"
SEEDS_GERMINATED_TOTAL = "seeds/germinated_total"
SEEDS_CULLED_TOTAL = "seeds/culled_total"
PARAMS_HOST = "params/host"
PARAMS_ACTIVE = "params/active_seeds"
PARAMS_FOSSILIZED = "params/fossilized"
PARAMS_EXCESS_RATIO = "params/excess_ratio"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_METRIC = "val/metric"
GOVERNOR_ROLLBACKS = "governor/rollbacks"


class _Event(EsperModel):
    epoch: int = Field(ge=0)
    """Epoch (decision point) at which the event happened."""


class EpochEvent(_Event):
    """End-of-epoch summary."""

    kind: Literal["epoch"] = "epoch"
    train_loss: float
    val_loss: float
    val_metric: float
    """The task's validation metric (accuracy for image classification)."""
    train_flops: float = 0.0
    """Training FLOPs spent by the run so far (cumulative)."""
    eval_flops: float = 0.0
    """Validation-pass FLOPs so far (the model as it is; cumulative, not part of the training budget)."""
    counterfactual_flops: float = 0.0
    """FLOPs of the counterfactual branches of those passes so far (cumulative)."""
    audit_flops: float = 0.0
    """FLOPs of the counterfactual branches of withering seeds (Emrakul's audits) so far (cumulative)."""
    wall_seconds: float = 0.0
    """Wall-clock seconds since the run started (cumulative)."""
    params_host: int
    params_active: int
    params_fossilized: int


class StageChangeEvent(_Event):
    """A slot moved between lifecycle stages."""

    kind: Literal["stage_change"] = "stage_change"
    slot: str
    from_stage: str
    to_stage: str
    blueprint: str | None = None
    reason: str = ""


class GateEvent(_Event):
    """A quality gate was evaluated for a commanded transition."""

    kind: Literal["gate"] = "gate"
    slot: str
    gate: str
    passed: bool
    reason: str = ""


class GerminateEvent(_Event):
    """A seed was grafted into a dormant slot."""

    kind: Literal["germinate"] = "germinate"
    slot: str
    blueprint: str
    seed_params: int
    tempo: int
    curve: str


class CullEvent(_Event):
    """A live seed was removed."""

    kind: Literal["cull"] = "cull"
    slot: str
    blueprint: str
    from_stage: str
    reason: str = ""


class FossilizeEvent(_Event):
    """A seed became a permanent part of the model."""

    kind: Literal["fossilize"] = "fossilize"
    slot: str
    blueprint: str
    seed_params: int


class AuditEvent(_Event):
    """A step of an audit of a fossil (Emrakul's, or Tamiyo's in a layout with audit ops): WITHER starts it,
    REVIVE keeps the seed, CULL removes it."""

    kind: Literal["audit"] = "audit"
    slot: str
    blueprint: str
    verdict: Literal["wither", "revive", "cull"]
    by: str
    """Who decided: "emrakul", or "tamiyo"."""
    churn: float | None = None
    """The last paired churn measured: validation metric with the seed whole − without it (None at WITHER)."""
    churn_loss: float | None = None
    """The same in validation loss: without − with."""
    contribution: float | None = None
    """The fossil's last counterfactual contribution before the audit."""
    seed_params: int = 0
    reason: str = ""


class RollbackEvent(_Event):
    """The Governor restored the last good state."""

    kind: Literal["rollback"] = "rollback"
    reason: str
    restored_epoch: int


TelemetryEvent = Union[
    EpochEvent, StageChangeEvent, GateEvent, GerminateEvent, CullEvent, FossilizeEvent, AuditEvent, RollbackEvent
]
