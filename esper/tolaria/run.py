"""One training run of a host on a task: the model, its trainer and Governor, and the histories a controller sees.

Every driver — the RL env, the comparison's arms, a job asking a served Tamiyo — goes through `Run`, so a
controller's observations are computed in one place: they cannot differ between training and serving.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from esper.kasmina import MorphogeneticModel
from esper.leyline import FactoredAction, Op, Stage, TrainingSignals, compute_masks
from esper.leyline.control import Controller, Observation
from esper.tolaria.governor import GovernorConfig
from esper.tolaria.trainer import TrainerConfig
from esper.leyline.telemetry import AuditEvent, EpochEvent, TelemetryEvent
from esper.tolaria.counterfactual import Evaluation, evaluate_with_counterfactuals, evaluation_flops
from esper.tolaria.flops import seeds_train_flops
from esper.tolaria.governor import Governor
from esper.tolaria.task import Task
from esper.tolaria.trainer import Trainer


@dataclass(frozen=True)
class EpochOutcome:
    train_loss: float
    """Mean train loss; a non-finite loss is reported as 1e9 so histories stay finite."""
    val_loss: float
    val_metric: float
    rolled_back: bool


@dataclass
class RunResult:
    metric_name: str
    """The task's name for its metric ("accuracy", …)."""
    val_metric: float
    val_loss: float
    eval_metric: float | None
    params_total: int
    params_host: int
    excess_ratio: float
    rollbacks: int
    wall_seconds: float
    train_flops: float
    """Training FLOPs the run spent (esper/tolaria/flops.py; evaluation passes not included)."""
    eval_flops: float = 0.0
    """FLOPs of the validation passes after each epoch (the model as it is: what the Governor and the controller
    read), not part of the training budget."""
    counterfactual_flops: float = 0.0
    """FLOPs of the counterfactual branches of those passes (each contributing seed switched off), on top."""
    audit_flops: float = 0.0
    """FLOPs of those passes' branches for WITHERING seeds (Emrakul's audits), on top."""
    metric_history: list[float] = field(default_factory=list)
    """Validation metric after each trained epoch."""
    flops_history: list[float] = field(default_factory=list)
    """Cumulative training FLOPs after each trained epoch."""
    eval_metric_history: list[float] = field(default_factory=list)
    """The metric on the task's external evaluation set after each trained epoch (empty without one; these
    passes are for the report only — no controller sees them, and their FLOPs are not booked)."""
    decisions: list[str] = field(default_factory=list)
    culled_fossils: int = 0
    """Fossils culled after an audit (by Emrakul or Tamiyo)."""
    revived_fossils: int = 0
    """Audits that ended by reviving the fossil (Governor rollbacks included)."""


AUDIT_OPS = {Op.WITHER: "wither", Op.REVIVE: "revive", Op.CULL: "cull"}


class Run:
    """A model training on a task, one epoch per controller decision.

    The histories start with an evaluation of the untrained model, so the first observation already has a
    validation loss and metric; `train_loss` stands at the task's chance level until an epoch has trained.
    The run keeps its own torch RNG stream (`own_rng`): what a germinated seed starts from depends on this run
    alone, not on whatever else (a policy's sampling, other runs in the process) drew random numbers.

    A `reaper` (Emrakul) decides after Tamiyo at every decision point, in the audit layout: it may wither a
    fossil, revive it, or cull it once withered."""

    def __init__(self, model: MorphogeneticModel, task: Task, trainer: TrainerConfig, governor: GovernorConfig, *,
                 data_seed: int, rng_state: torch.Tensor | None = None, rent_lambda: float = 0.0,
                 reaper: Controller | None = None) -> None:
        """`rent_lambda`: the price of capacity the controller is told (given by the RL side; 0 outside it).
        `reaper`: Emrakul, or None (no audits but Tamiyo's own)."""
        self.model, self.task, self.rent_lambda, self.reaper = model, task, rent_lambda, reaper
        self.trainer = Trainer(model, task, trainer, seed=data_seed)
        self.governor = Governor(self.trainer, governor, emit=self._emit)
        self._rng_state = rng_state if rng_state is not None else torch.get_rng_state()
        self._listeners: list[Callable[[TelemetryEvent], None]] = []
        self.eval_flops = self.counterfactual_flops = self.audit_flops = 0.0
        """Validation FLOPs spent so far: the model as it is, the counterfactual branches and the audits on top."""
        self.audit_counts = {"cull": 0, "revive": 0}
        self._val_samples = sum(x.shape[0] for x, _ in task.val_batches)
        first = self._evaluate(counterfactuals=False)
        self.losses: list[float] = []
        self.val_losses, self.metrics = [first.loss], [first.metric]
        self.decisions: list[str] = []
        self.flops: list[float] = []  # cumulative training FLOPs after each epoch
        self.eval_metrics: list[float] = []  # the external evaluation set's metric after each epoch (if the task has one)
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ what a controller sees
    @property
    def done(self) -> bool:
        """The last epoch is trained (or, in an equal-compute run, the FLOPs budget is spent)."""
        return self.trainer.epoch >= self.trainer.cfg.epochs or self.trainer.exhausted

    def signals(self) -> TrainingSignals:
        pc, t = self.model.param_counts(), self.trainer
        return TrainingSignals(
            epoch=self.trainer.epoch, max_epochs=self.trainer.cfg.epochs, chance_loss=self.task.chance_loss,
            train_loss=self.losses[-1] if self.losses else self.task.chance_loss,
            val_loss=self.val_losses[-1], val_metric=self.metrics[-1],
            host_params=pc.host, active_seed_params=pc.active_seeds, fossilized_params=pc.fossilized,
            loss_history=tuple(self.losses), metric_history=tuple(self.metrics),
            budget_spent=t.train_flops / t.compute_budget,
            excess_flops_ratio=seeds_train_flops(self.model) / t.host_flops,
            rent_lambda=self.rent_lambda, budget_host_epochs=t.compute_budget / t.host_epoch_flops,
            compute_bound=t.budget is not None,
        )

    def observe(self) -> Observation:
        m = self.model
        return Observation(self.signals(), m.reports(), m.masks(), m.action_spec)

    def observe_audits(self) -> Observation:
        """What Emrakul sees: the same signals and reports, in the audit layout (WITHER, REVIVE, CULL)."""
        m, spec = self.model, self.model.audit_spec
        reports = m.reports()
        return Observation(self.signals(), reports, compute_masks(spec, reports), spec)

    # ------------------------------------------------------------------ acting and training
    def apply(self, action: FactoredAction, reason: str = "") -> None:
        """Execute Tamiyo's decision on the plane (a germinated seed's weights come from the run's own RNG
        stream), then the reaper's, if the run has one."""
        self._execute(action, reason, "tamiyo")
        self.decisions.append(f"{self.trainer.epoch}: {action.op.name}" + (f" ({reason})" if reason else ""))
        if self.reaper is not None:
            decision = self.reaper.decide(self.observe_audits())
            if decision.action.op is not Op.WAIT:
                self._execute(decision.action, decision.reason, "emrakul")
                self.decisions.append(f"{self.trainer.epoch}: emrakul {decision.action.op.name} "
                                      f"{self.model.action_spec.slots[decision.action.slot]} ({decision.reason})")

    def _execute(self, action: FactoredAction, reason: str, by: str) -> None:
        """Apply one controller's action; a step of an audit (WITHER, REVIVE, a withered fossil's CULL) is
        announced as an AuditEvent carrying what the audit measured."""
        slots = self.model.action_spec.slots
        name = slots[action.slot] if 0 <= action.slot < len(slots) else None  # else apply refuses the action
        before = self.model.slot(name).state if name is not None else None
        emrakul = by == "emrakul"
        with self.own_rng():
            self.model.apply(action, f"emrakul: {reason}" if emrakul else "commanded", audit=emrakul)
        if action.op in AUDIT_OPS and (action.op is not Op.CULL or before.stage is Stage.WITHERING):
            verdict = AUDIT_OPS[action.op]
            if verdict in self.audit_counts:
                self.audit_counts[verdict] += 1
            self._emit(AuditEvent(epoch=self.trainer.epoch, slot=name, blueprint=before.blueprint, verdict=verdict,
                                  by=by, churn=before.churn, churn_loss=before.churn_loss,
                                  contribution=before.contribution, seed_params=before.seed_params, reason=reason))

    def step(self, action: FactoredAction, reason: str = "",
             before_epoch: Callable[[Trainer], None] | None = None) -> EpochOutcome:
        """Apply a decision, train one epoch, judge it. `before_epoch(trainer)` runs just before the training."""
        self.apply(action, reason)
        if before_epoch is not None:
            before_epoch(self.trainer)
        return self.finish_epoch(self.trainer.train_epoch())

    def finish_epoch(self, loss: float) -> EpochOutcome:
        """After an epoch's training (here or batch-first elsewhere): the Governor judges it; evaluation with
        counterfactuals records each seed's contribution; the slots' clocks tick; histories grow."""
        model = self.model
        finite = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())  # one device sync
        rolled_back = self.governor.observe(loss, finite)
        ev = self._evaluate(counterfactuals=True)
        for name, value in ev.contributions.items():
            slot = model.slot(name)
            if slot.seed is not None:
                slot.record(contribution=value)  # a withering seed's: what it still contributes at its α
            if name in ev.churns and slot.alpha < 1.0:  # trained with and without it this epoch: a fair pair
                churn, churn_loss = ev.churns[name]
                slot.record(churn=churn, churn_loss=churn_loss)
        model.step_epoch()
        out = EpochOutcome(loss if math.isfinite(loss) else 1e9, ev.loss, ev.metric, rolled_back)
        self.losses.append(out.train_loss)
        self.val_losses.append(out.val_loss)
        self.metrics.append(out.val_metric)
        self.flops.append(self.trainer.train_flops)
        if self.task.eval_batches:
            self.eval_metrics.append(
                evaluate_with_counterfactuals(model, self.task, self.task.eval_batches, counterfactuals=False).metric)
        if self._listeners:
            pc = model.param_counts()
            self._emit(EpochEvent(epoch=self.trainer.epoch, train_loss=out.train_loss, val_loss=out.val_loss,
                                  val_metric=out.val_metric, params_host=pc.host, params_active=pc.active_seeds,
                                  params_fossilized=pc.fossilized, train_flops=self.trainer.train_flops,
                                  eval_flops=self.eval_flops, counterfactual_flops=self.counterfactual_flops,
                                  audit_flops=self.audit_flops, wall_seconds=time.perf_counter() - self.started))
        return out

    def result(self) -> RunResult:
        pc = self.model.param_counts()
        ev = self.task.eval_batches
        eval_metric = evaluate_with_counterfactuals(self.model, self.task, ev, counterfactuals=False).metric if ev else None
        return RunResult(self.task.metric_name, self.metrics[-1], self.val_losses[-1], eval_metric, pc.total, pc.host,
                         pc.excess_ratio, self.governor.rollbacks, time.perf_counter() - self.started,
                         self.trainer.train_flops, self.eval_flops, self.counterfactual_flops, self.audit_flops,
                         self.metrics[1:], list(self.flops), list(self.eval_metrics), list(self.decisions),
                         self.audit_counts["cull"], self.audit_counts["revive"] + self.governor.revived)

    def _evaluate(self, counterfactuals: bool) -> Evaluation:
        """The validation pass (with each seed's counterfactual contribution), its FLOPs booked."""
        as_is, branches, audits = evaluation_flops(self.model, self.task.val_batches[0][0], counterfactuals)
        self.eval_flops += as_is * self._val_samples
        self.counterfactual_flops += branches * self._val_samples
        self.audit_flops += audits * self._val_samples
        return evaluate_with_counterfactuals(self.model, self.task, self.task.val_batches, counterfactuals)

    # ------------------------------------------------------------------ plumbing
    def listen(self, listener: Callable[[TelemetryEvent], None]) -> None:
        """Send every telemetry event of the run (stage changes, epochs, rollbacks) to `listener`."""
        self._listeners.append(listener)
        self.model.listeners.append(listener)

    def _emit(self, event: TelemetryEvent) -> None:
        for listener in self._listeners:
            listener(event)

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run with this run's torch RNG stream, leaving the process's stream as it was."""
        outside = torch.get_rng_state()
        torch.set_rng_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = torch.get_rng_state()
            torch.set_rng_state(outside)


def run_training(run: Run, controller: Controller, before_epoch: Callable[[Trainer], None] | None = None,
                 max_rollbacks: int = 3) -> RunResult:
    """Drive `run` to its last epoch with `controller` deciding before each epoch.

    `before_epoch(trainer)` runs just before each training epoch (fault injection, custom schedules). A Governor
    rollback returns the run to an earlier epoch, which is trained again; after `max_rollbacks` the run stops
    where it is (a run that keeps diverging is not rescued by retrying)."""
    while not run.done and run.governor.rollbacks <= max_rollbacks:
        decision = controller.decide(run.observe())
        run.step(decision.action, decision.reason, before_epoch)
    return run.result()
