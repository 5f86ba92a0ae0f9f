"""The architecture manifest of a grown model: what weights alone cannot tell."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from esper.leyline.base import EsperModel

MANIFEST_FORMAT_VERSION = 1


class SlotManifest(EsperModel):
    """One slot of a grown model."""

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
    epoch: int = Field(0, ge=0)
    """The slot's clock (epochs ticked since the model was built)."""


class ArchitectureManifest(EsperModel):
    """Host description + slot states: enough to rebuild a grown model before loading its weights."""

    format_version: int = MANIFEST_FORMAT_VERSION
    host: dict[str, Any]
    """The host's own spec (from `HostProtocol.host_spec()`); opaque to Kasmina."""
    slots: list[SlotManifest]
    """Slots in execution order."""
