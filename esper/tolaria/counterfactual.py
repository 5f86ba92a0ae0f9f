"""Counterfactual contribution of each contributing seed, in one fused pass over stacked configurations.

contribution(slot) = the task's validation metric as-is − the metric with that slot's α forced to 0.

Instead of K separate passes, the configurations ride along the batch dimension and share their common
prefix: everything before a slot is computed once; at each contributing slot the as-is branch forks into
"slot applied" and "slot off", so the "slot off" branch only pays for the network after that slot.
Slots whose output equals the host's (DORMANT, GERMINATED, TRAINING, embargo stages) contribute exactly 0.
A WITHERING fossil is measured like any other while its α > 0 (what it still contributes at its α), and gets
one more branch, "seed at α = 1": its churn is that branch's metric − the "slot off" branch's, on the same
examples (a paired audit of a host trained both with and without it). Both of its branches are Emrakul's audit;
their FLOPs are booked as audit compute.
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
    """Slots (execution order) whose seed can change the output now."""
    return [n for n, s in model.slots.items()
            if s.seed is not None and (s.stage is Stage.FOSSILIZED or (s.stage in CONTRIBUTING_STAGES and s.alpha > 0))]


def branch_layout(model: MorphogeneticModel, slots: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Where `fused_outputs` puts each branch: ({slot: index of "slot off"}, {withering slot: index of "seed on"})."""
    off, on, k = {}, {}, 1
    for name in slots:
        off[name], k = k, k + 1
        if model.slot(name).stage is Stage.WITHERING:
            on[name], k = k, k + 1
    return off, on


@torch.no_grad()
def fused_outputs(model: MorphogeneticModel, x: Tensor, slots: list[str]) -> Tensor:
    """Outputs of the configurations of `branch_layout`: (K, B, …); [0] as-is, then per slot (execution order)
    that slot off and, for a WITHERING slot, its seed at α = 1."""
    if model.training:
        raise RuntimeError("fused_outputs needs model.eval(): in train mode BatchNorm would mix the forked branches")
    batch = x.shape[0]
    off, on = branch_layout(model, slots)

    def inject(name: str, h: Tensor) -> Tensor:  # h: (G·B, ...), G = branches forked so far
        slot = model.slot(name)
        out = h if slot.seed is None else slot(h)
        if name in off:
            out = torch.cat([out, h[:batch]])  # fork: the as-is branch (group 0) without this slot
        if name in on:
            out = torch.cat([out, h[:batch] + slot.seed(h[:batch])])  # fork: the as-is branch with the seed whole
        return out

    out = model.host.forward_through(x, inject)  # (K·B, …)
    return out.view(-1, batch, *out.shape[1:])  # (K·B, …) → (K, B, …)


@torch.no_grad()
def evaluation_flops(model: MorphogeneticModel, x: Tensor, counterfactuals: bool = True) -> tuple[float, float, float]:
    """Per-sample FLOPs of one evaluation like `evaluate_with_counterfactuals` on inputs like `x`: (the model as
    it is, the counterfactual branches of the other seeds on top, the branches of WITHERING seeds — Emrakul's
    audits — on top). Counted by torch's FLOP counter on a 4-sample slice of `x`."""
    was_training = model.training
    model.eval()
    probe = x[:4]
    slots = contributing_slots(model) if counterfactuals else []
    audited = set(branch_layout(model, slots)[1])
    counts = []
    for forks in ([], [n for n in slots if n not in audited], slots):
        with FlopCounterMode(display=False) as counter:
            fused_outputs(model, probe, forks)
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
    """Each WITHERING seed with α > 0: (metric with it whole − metric without it, loss without − loss with),
    paired on the same examples — its audit's churn."""


@torch.no_grad()
def evaluate_with_counterfactuals(model: MorphogeneticModel, task: Task, batches: Iterable[tuple[Tensor, Tensor]],
                                  counterfactuals: bool = True) -> Evaluation:
    """Loss, metric and each slot's contribution over `batches`, in one fused pass (`counterfactuals=False`:
    the model as it is only, every contribution 0)."""
    slots = contributing_slots(model) if counterfactuals else []
    off, on = branch_layout(model, slots)
    was_training = model.training
    model.eval()
    metric_sums = torch.zeros(1 + len(off) + len(on))
    loss_sums = {k: 0.0 for k in (0, *(off[name] for name in on), *on.values())}  # as-is and the audits' branches
    n = 0
    for x, y in batches:
        outputs = fused_outputs(model, x, slots)
        metric_sums += task.metric_sums(outputs, y)
        for k in loss_sums:
            loss_sums[k] += float(task.loss(outputs[k], y, reduction="sum"))
        n += task.count(y)
    model.train(was_training)
    metric, n = metric_sums / max(n, 1), max(n, 1)
    contrib = {name: 0.0 for name in model.slots}
    for name, k in off.items():
        contrib[name] = float(metric[0] - metric[k])
    churns = {name: (float(metric[k] - metric[off[name]]), (loss_sums[off[name]] - loss_sums[k]) / n)
              for name, k in on.items()}
    return Evaluation(loss_sums[0] / n, float(metric[0]), contrib, churns)
