"""The controller contract: what every controller (heuristic, schedule, PPO policy, served policy) sees and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from esper.leyline.actions import ActionMasks, ActionSpec, FactoredAction
from esper.leyline.signals import SlotReport, TrainingSignals


@dataclass(frozen=True)
class Observation:
    signals: TrainingSignals
    reports: Sequence[SlotReport]
    masks: ActionMasks
    spec: ActionSpec


@dataclass(frozen=True)
class Decision:
    action: FactoredAction
    reason: str


class Controller(Protocol):
    """Decides one factored action per decision point; must only return actions the masks allow."""

    name: str

    def decide(self, obs: Observation) -> Decision: ...
