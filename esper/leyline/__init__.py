"""Leyline: the shared contracts — stages and transitions, factored actions and masks, signals, telemetry, config loading."""

from esper.leyline.actions import (
    HEADS,
    OP_USES,
    ActionMasks,
    ActionSpec,
    FactoredAction,
    Op,
    compute_masks,
)
from esper.leyline.base import EsperModel
from esper.leyline.blending import BlendCurve, alpha_at
from esper.leyline.manifest import ArchitectureManifest, SlotManifest
from esper.leyline.registry import HostConfig
from esper.leyline.signals import SlotReport, SlotState, TrainingSignals
from esper.leyline.stages import (
    ADVANCE_TARGET,
    AUTOMATIC_STAGES,
    CONTRIBUTING_STAGES,
    CULLABLE_STAGES,
    FOSSIL_STAGES,
    LIVE_STAGES,
    TRANSITIONS,
    Stage,
    is_legal,
)

__all__ = [
    "ADVANCE_TARGET", "AUTOMATIC_STAGES", "CONTRIBUTING_STAGES", "CULLABLE_STAGES", "FOSSIL_STAGES", "HEADS", "LIVE_STAGES",
    "OP_USES", "TRANSITIONS", "ActionMasks", "ActionSpec", "ArchitectureManifest", "BlendCurve",
    "EsperModel", "FactoredAction", "HostConfig", "Op", "SlotManifest",
    "SlotReport", "SlotState", "Stage", "TrainingSignals", "alpha_at", "compute_masks", "is_legal",
]
