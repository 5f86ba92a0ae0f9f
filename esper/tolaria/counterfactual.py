"""Counterfactual contribution of each contributing seed, in one fused pass over stacked configurations.

contribution(slot) = the task's validation metric as-is − the metric with that slot's α forced to 0.

Instead of K separate passes, the configurations ride along the batch dimension and share their common
prefix: everything before a slot is computed once; at each contributing slot the as-is branch forks into
"slot applied" and "slot off", so the "slot off" branch only pays for the network after that slot.
Slots whose output equals the host's (DORMANT, GERMINATED, TRAINING, embargo stages) contribute exactly 0.

Emrakul's audits ride in the same pass: a WITHERING slot forks a "revived" branch instead (its seed at α = 1), and
its churn = the metric revived − as-is (and the loss as-is − revived) says what withering has cost so far, on
the same examples and weights: no noise from training between two measurements.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from esper.kasmina import MorphogeneticModel
from esper.leyline import CONTRIBUTING_STAGES, Stage
from esper.tolaria.task import Task


def contributing_slots(model: MorphogeneticModel) -> list[str]:
    """Slots (execution order) whose seed can change the output now and are not being audited."""
    return [n for n, s in model.slots.items()
            if s.seed is not None and s.stage is not Stage.WITHERING
            and (s.stage is Stage.FOSSILIZED or (s.stage in CONTRIBUTING_STAGES and s.alpha > 0))]


def audited_slots(model: MorphogeneticModel) -> list[str]:
    """WITHERING slots (execution order): each gets a revived branch, its audit."""
    return [n for n, s in model.slots.items() if s.seed is not None and s.stage is Stage.WITHERING]


@torch.no_grad()
def fused_outputs(model: MorphogeneticModel, x: Tensor, slots: list[str], revived: list[str] = ()) -> Tensor:
    """Outputs of 1 + len(slots) + len(revived) configurations: (K, B, …); [0] as-is, then one branch per fork in
    execution order — a slot of `slots` switched off, a slot of `revived` at α = 1."""
    if model.training:
        raise RuntimeError("fused_outputs needs model.eval(): in train mode BatchNorm would mix the forked branches")
    batch = x.shape[0]
    off, full = set(slots), set(revived)

    def inject(name: str, h: Tensor) -> Tensor:  # h: (G·B, ...), G = branches forked so far
        slot = model.slot(name)
        out = h if slot.seed is None else slot(h)
        if name in off:
            out = torch.cat([out, h[:batch]])  # fork: the as-is branch (group 0) without this slot
        elif name in full:
            slot.alpha_override = 1.0
            try:
                out = torch.cat([out, slot(h[:batch])])  # fork: the as-is branch with this seed revived
            finally:
                slot.alpha_override = None
        return out

    out = model.host.forward_through(x, inject)  # (K·B, …)
    return out.view(-1, batch, *out.shape[1:])  # (K·B, …) → (K, B, …)


def fork_order(model: MorphogeneticModel, slots: list[str], revived: list[str]) -> list[str]:
    """The slot of each forked branch, in branch order (forks happen in execution order)."""
    forks = set(slots) | set(revived)
    return [n for n in model.slots if n in forks]


@torch.no_grad()
def evaluation_flops(model: MorphogeneticModel, x: Tensor, counterfactuals: bool = True) -> tuple[float, float, float]:
    """Per-sample FLOPs of one evaluation like `evaluate_with_counterfactuals` on inputs like `x`: (the model as
    it is, the counterfactual branches on top, the audits' revived branches on top). Counted by torch's FLOP
    counter on a 4-sample slice of `x`."""
    was_training = model.training
    model.eval()
    probe = x[:4]
    slots, revived = (contributing_slots(model), audited_slots(model)) if counterfactuals else ([], [])
    counts = []
    for forks in (([], []), (slots, []), (slots, revived)):
        with FlopCounterMode(display=False) as counter:
            fused_outputs(model, probe, *forks)
        counts.append(counter.get_total_flops() / probe.shape[0])
    model.train(was_training)
    return counts[0], counts[1] - counts[0], counts[2] - counts[1]


class Evaluation(NamedTuple):
    loss: float
    """Mean loss of the model as it is."""
    metric: float
    """The task's primary metric of the model as it is."""
    contributions: dict[str, float]
    """Every slot's counterfactual contribution to the metric (0 for slots that cannot change the output)."""
    churns: dict[str, tuple[float, float]] = {}
    """Each WITHERING slot's audit: (metric revived − as-is, loss as-is − revived)."""


@torch.no_grad()
def evaluate_with_counterfactuals(model: MorphogeneticModel, task: Task, batches: Iterable[tuple[Tensor, Tensor]],
                                  counterfactuals: bool = True) -> Evaluation:
    """Loss, metric, each slot's contribution and each audit's churn over `batches`, in one fused pass
    (`counterfactuals=False`: the model as it is only, every contribution 0, no audit)."""
    slots, revived = (contributing_slots(model), audited_slots(model)) if counterfactuals else ([], [])
    forks = fork_order(model, slots, revived)
    was_training = model.training
    model.eval()
    metric_sums = torch.zeros(1 + len(forks))
    loss_sums = [0.0] * (1 + len(revived))  # as-is, then the revived branches (the audits need their loss)
    branches = [0] + [1 + i for i, name in enumerate(forks) if name in revived]
    n = 0
    for x, y in batches:
        outputs = fused_outputs(model, x, slots, revived)
        metric_sums += task.metric_sums(outputs, y)
        for j, b in enumerate(branches):
            loss_sums[j] += float(task.loss(outputs[b], y, reduction="sum"))
        n += task.count(y)
    model.train(was_training)
    metric, loss = metric_sums / max(n, 1), [total / max(n, 1) for total in loss_sums]
    contrib = {name: 0.0 for name in model.slots}
    churns = {}
    for i, name in enumerate(forks):
        if name in revived:
            j = 1 + revived.index(name)
            churns[name] = (float(metric[1 + i] - metric[0]), loss[0] - loss[j])
        else:
            contrib[name] = float(metric[0] - metric[1 + i])
    return Evaluation(loss[0], float(metric[0]), contrib, churns)
