"""The architecture manifest of a grown model: what weights alone cannot tell."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from esper.leyline.base import EsperModel
from esper.leyline.blending import BlendCurve
from esper.leyline.signals import SlotState
from esper.leyline.stages import Stage

MANIFEST_FORMAT_VERSION = 1


class SlotManifest(EsperModel):
    """One slot of a grown model, as stored: a SlotState's persistent fields (stage and curve by name)."""

    name: str
    stage: str
    """Stage name (Stage enum member name)."""
    blueprint: str | None = None
    tempo: int | None = None
    curve: str | None = None
    alpha: float = Field(0.0, ge=0.0, le=1.0)
    epochs_in_stage: int = Field(0, ge=0)
    embargo_remaining: int = Field(0, ge=0)
    contribution: float | None = None
    grad_norm: float | None = None
    churn: float | None = None
    churn_loss: float | None = None
    epoch: int = Field(0, ge=0)
    """The slot's clock (epochs ticked since the model was built)."""

    @classmethod
    def from_state(cls, state: SlotState) -> "SlotManifest":
        """The stored form of `state` (a non-finite gradient norm is stored as unknown)."""
        fields = {k: getattr(state, k) for k in cls.model_fields}
        grad = state.grad_norm
        return cls.model_validate(fields | {
            "stage": state.stage.name, "curve": None if state.curve is None else state.curve.value,
            "grad_norm": grad if grad is None or math.isfinite(grad) else None})

    def to_state(self, seed_params: int, sanity_ok: bool) -> SlotState:
        """The slot state this manifest describes; what only the rebuilt module can tell is passed in."""
        fields = {k: getattr(self, k) for k in type(self).model_fields}
        return SlotState(**fields | {"stage": Stage[self.stage], "curve": None if self.curve is None else BlendCurve(self.curve),
                                     "seed_params": seed_params, "sanity_ok": sanity_ok})


class ArchitectureManifest(EsperModel):
    """Host description + slot states: enough to rebuild a grown model before loading its weights."""

    format_version: int = MANIFEST_FORMAT_VERSION
    host: dict[str, Any]
    """The host's own spec (from `HostProtocol.host_spec()`); opaque to Kasmina."""
    slots: list[SlotManifest]
    """Slots in execution order."""
