"""One training run: controller decides → plane acts → train an epoch → Governor → evaluate + counterfactuals."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch

from esper.leyline import TrainingSignals
from esper.leyline.control import Controller, Observation
from esper.leyline.telemetry import EpochEvent
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


def build_signals(trainer: Trainer, losses: list[float], val_losses: list[float], accs: list[float],
                  initial_loss: float = 0.0) -> TrainingSignals:
    """The controller's view of training so far (`initial_loss` stands in before the first epoch)."""
    pc = trainer.model.param_counts()
    return TrainingSignals(
        epoch=trainer.epoch, max_epochs=trainer.cfg.epochs,
        train_loss=losses[-1] if losses else initial_loss,
        val_loss=val_losses[-1] if val_losses else 0.0, val_accuracy=accs[-1] if accs else 0.0,
        host_params=pc.host, active_seed_params=pc.active_seeds, fossilized_params=pc.fossilized,
        loss_history=tuple(losses), accuracy_history=tuple(accs),
    )


@dataclass(frozen=True)
class EpochOutcome:
    train_loss: float
    """Mean train loss; a non-finite loss is reported as 1e9 so histories stay finite."""
    val_loss: float
    val_accuracy: float
    rolled_back: bool


def train_after_decision(trainer: Trainer, governor: Governor, val_batches: Iterable | None = None) -> EpochOutcome:
    """What follows every controller decision (run loop and RL env alike): train one epoch, then judge_epoch()."""
    return judge_epoch(trainer, governor, trainer.train_epoch(), val_batches)


def judge_epoch(trainer: Trainer, governor: Governor, loss: float, val_batches: Iterable | None = None) -> EpochOutcome:
    """After an epoch's training: let the Governor judge it, evaluate with counterfactuals on `val_batches`
    (default: the trainer's validation loader) and record them on slots holding a seed, tick the slots' clocks."""
    model = trainer.model
    finite = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())  # one device sync
    rolled_back = governor.observe(loss, finite)
    val_loss, val_acc, contrib = evaluate_with_counterfactuals(model, val_batches if val_batches is not None else trainer.val_loader)
    for name, value in contrib.items():
        slot = model.slot(name)
        if slot.seed is not None:
            slot.record(contribution=value)
    model.step_epoch()
    return EpochOutcome(loss if math.isfinite(loss) else 1e9, val_loss, val_acc, rolled_back)


def run_training(trainer: Trainer, controller: Controller, governor: Governor, emit=None,
                 eval_loader: DeviceLoader | None = None, before_epoch=None) -> RunResult:
    """Train for trainer.cfg.epochs epochs with `controller` acting once before each epoch.

    `before_epoch(trainer)` runs just before each training epoch (fault injection, custom schedules)."""
    model, emit = trainer.model, emit or (lambda e: None)
    losses, val_losses, accs, decisions = [], [], [], []
    t0 = time.perf_counter()
    for _ in range(trainer.cfg.epochs):
        obs = Observation(build_signals(trainer, losses, val_losses, accs), model.reports(), model.masks(), model.action_spec)
        decision = controller.decide(obs)
        model.apply(decision.action)
        decisions.append(f"{trainer.epoch}: {decision.action.op.name} ({decision.reason})")
        if before_epoch is not None:
            before_epoch(trainer)
        out = train_after_decision(trainer, governor)
        losses.append(out.train_loss)
        val_losses.append(out.val_loss)
        accs.append(out.val_accuracy)
        pc = model.param_counts()
        emit(EpochEvent(epoch=trainer.epoch, train_loss=out.train_loss, val_loss=out.val_loss, val_accuracy=out.val_accuracy,
                        params_host=pc.host, params_active=pc.active_seeds, params_fossilized=pc.fossilized))
    pc = model.param_counts()
    eval_acc = trainer.evaluate(eval_loader)[1] if eval_loader is not None else None
    return RunResult(accs[-1], val_losses[-1], eval_acc, pc.total, pc.host, pc.excess_ratio, governor.rollbacks,
                     time.perf_counter() - t0, accs, decisions)
