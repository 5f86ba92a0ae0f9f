"""One training run: controller decides → plane acts → train an epoch → Governor → evaluate + counterfactuals."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from esper.kasmina import MorphogeneticModel
from esper.leyline import TrainingSignals
from esper.leyline.telemetry import EpochEvent
from esper.leyline.control import Controller, Observation
from esper.tolaria.counterfactual import evaluate_with_counterfactuals
from esper.tolaria.data import DeviceLoader
from esper.tolaria.governor import Governor
from esper.tolaria.trainer import Trainer


@dataclass
class RunResult:
    val_accuracy: float
    val_loss: float
    eval_accuracy: float | None
    params_total: int
    params_host: int
    excess_ratio: float
    rollbacks: int
    wall_seconds: float
    accuracy_history: list[float] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


def _signals(trainer: Trainer, losses: list[float], val_losses: list[float], accs: list[float]) -> TrainingSignals:
    pc = trainer.model.param_counts()
    return TrainingSignals(
        epoch=trainer.epoch, max_epochs=trainer.cfg.epochs,
        train_loss=losses[-1] if losses else 0.0,
        val_loss=val_losses[-1] if val_losses else 0.0, val_accuracy=accs[-1] if accs else 0.0,
        host_params=pc.host, active_seed_params=pc.active_seeds, fossilized_params=pc.fossilized,
        loss_history=tuple(losses), accuracy_history=tuple(accs),
    )


def _params_finite(model: MorphogeneticModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def run_training(trainer: Trainer, controller: Controller, governor: Governor, emit=None,
                 eval_loader: DeviceLoader | None = None, before_epoch=None) -> RunResult:
    """Train for trainer.cfg.epochs epochs with `controller` acting once before each epoch.

    `before_epoch(trainer)` runs just before each training epoch (fault injection, custom schedules)."""
    model, emit = trainer.model, emit or (lambda e: None)
    losses, val_losses, accs, decisions = [], [], [], []
    t0 = time.perf_counter()
    for _ in range(trainer.cfg.epochs):
        obs = Observation(_signals(trainer, losses, val_losses, accs), model.reports(), model.masks(), model.action_spec)
        decision = controller.decide(obs)
        model.apply(decision.action)
        decisions.append(f"{trainer.epoch}: {decision.action.op.name} ({decision.reason})")
        if before_epoch is not None:
            before_epoch(trainer)
        loss = trainer.train_epoch()
        governor.observe(loss, _params_finite(model))
        val_loss, val_acc, contrib = evaluate_with_counterfactuals(model, trainer.val_loader)
        for name, value in contrib.items():
            slot = model.slot(name)
            if slot.seed is not None:
                slot.record(contribution=value)
        model.step_epoch()
        losses.append(loss if math.isfinite(loss) else 1e9)
        val_losses.append(val_loss)
        accs.append(val_acc)
        pc = model.param_counts()
        emit(EpochEvent(epoch=trainer.epoch, train_loss=losses[-1], val_loss=val_loss, val_accuracy=val_acc,
                        params_host=pc.host, params_active=pc.active_seeds, params_fossilized=pc.fossilized))
    pc = model.param_counts()
    eval_acc = trainer.evaluate(eval_loader)[1] if eval_loader is not None else None
    return RunResult(accs[-1], val_losses[-1], eval_acc, pc.total, pc.host, pc.excess_ratio, governor.rollbacks,
                     time.perf_counter() - t0, accs, decisions)
