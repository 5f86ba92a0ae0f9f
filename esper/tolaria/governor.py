"""The Governor: detects catastrophic training (NaN/Inf, loss divergence) and rolls back to the last good state."""

from __future__ import annotations

import copy
import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import Field

from esper.leyline import LIVE_STAGES, Stage
from esper.leyline.base import EsperModel
from esper.leyline.telemetry import RollbackEvent, TelemetryEvent


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


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


class Governor:
    """Keeps a snapshot of the last good state (model structure + weights + host optimiser) and restores it."""

    def __init__(self, trainer, cfg: GovernorConfig | None = None, emit: Callable[[TelemetryEvent], None] | None = None) -> None:
        self.trainer, self.cfg, self.emit = trainer, cfg or GovernorConfig(), emit
        self.losses: deque[float] = deque(maxlen=self.cfg.window)
        self.strikes = 0
        self.rollbacks = 0
        self.revived = 0
        """Withering fossils a rollback revived (their audits abandoned)."""
        self._snapshot: dict[str, Any] | None = None
        self.snapshot()

    def judge(self, loss: float) -> Verdict:
        """Classify an epoch's training loss (does not change any state)."""
        if not math.isfinite(loss):
            return Verdict(False, f"non-finite loss ({loss})")
        if len(self.losses) >= self.cfg.min_history:
            mean = statistics.fmean(self.losses)
            std = statistics.pstdev(self.losses)
            if loss > mean + self.cfg.sigma * std and loss > mean * (1 + self.cfg.min_rise):
                return Verdict(False, f"loss {loss:.4g} diverged (window mean {mean:.4g}, std {std:.3g})")
        return Verdict(True)

    def observe(self, loss: float, params_finite: bool = True) -> bool:
        """Feed one epoch's loss; returns True if the Governor rolled back (the RL death penalty applies)."""
        if not self.cfg.enabled:
            return False
        verdict = self.judge(loss) if params_finite else Verdict(False, "non-finite parameters")
        if verdict.ok:
            self.strikes = 0
            self.losses.append(loss)
            self.snapshot()
            return False
        self.strikes += 1
        if math.isfinite(loss) and params_finite and self.strikes < self.cfg.patience:
            return False
        self.rollback(verdict.reason)
        return True

    def snapshot(self) -> None:
        t = self.trainer
        self._snapshot = {
            "model": t.model.snapshot(),
            "host_opt": copy.deepcopy(t.host_opt.state_dict()),
            "fossil_groups": list(t.fossil_group_order),
            "epoch": t.epoch,
        }

    def rollback(self, reason: str) -> None:
        """Restore the last good state (model, host optimiser, epoch), then cull every live seed there (they are
        the suspects) and revive every withering fossil (an audit in flight is abandoned: the fossil returns to
        α = 1, the function it had when it was last trusted)."""
        snap, t = self._snapshot, self.trainer
        assert snap is not None
        failed_epoch = t.epoch
        t.epoch = snap["epoch"]  # the LR schedule and the run's clock return with the slots' clocks
        before = {name: slot.stage for name, slot in t.model.slots.items()}
        t.model.restore(snap["model"])
        for name, slot in t.model.slots.items():  # make the restore visible in the stage stream
            if slot.stage is not before[name]:
                slot.announce_restore(before[name])
        t.rebuild_host_optimizer(snap["fossil_groups"], snap["host_opt"])
        for name, slot in t.model.slots.items():
            if slot.stage in LIVE_STAGES:
                slot.cull(reason="governor rollback")
            elif slot.stage is Stage.WITHERING:
                slot.revive(reason="governor rollback")
                self.revived += 1
        t.sync_optimizers()
        self.rollbacks += 1
        self.strikes = 0
        if self.emit is not None:
            self.emit(RollbackEvent(epoch=failed_epoch, reason=reason, restored_epoch=snap["epoch"]))
