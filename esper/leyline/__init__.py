"""Leyline: the shared contracts — stages and transitions, factored actions and masks, signals, telemetry, configs."""

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
from esper.leyline.config import (
    GATE_PROFILES,
    BlendChoices,
    CNNHostConfig,
    GateConfig,
    HostConfig,
    KasminaConfig,
)
from esper.leyline.manifest import ArchitectureManifest, SlotManifest
from esper.leyline.signals import SlotReport, SlotState, TrainingSignals
from esper.leyline.stages import (
    ADVANCE_TARGET,
    AUTOMATIC_STAGES,
    CONTRIBUTING_STAGES,
    LIVE_STAGES,
    TRANSITIONS,
    Stage,
    is_legal,
)

__all__ = [
    "ADVANCE_TARGET", "AUTOMATIC_STAGES", "CONTRIBUTING_STAGES", "GATE_PROFILES", "HEADS", "LIVE_STAGES",
    "OP_USES", "TRANSITIONS", "ActionMasks", "ActionSpec", "ArchitectureManifest", "BlendChoices", "BlendCurve", "CNNHostConfig",
    "EsperModel", "FactoredAction", "GateConfig", "HostConfig", "KasminaConfig", "Op", "SlotManifest",
    "SlotReport", "SlotState", "Stage", "TrainingSignals", "alpha_at", "compute_masks", "is_legal",
]
