"""Counterfactual contribution of each contributing seed, in one fused pass over stacked configurations.

contribution(slot) = val accuracy as-is − val accuracy with that slot's α forced to 0.

Instead of K separate passes, the configurations ride along the batch dimension and share their common
prefix: everything before a slot is computed once; at each contributing slot the as-is branch forks into
"slot applied" and "slot off", so the "slot off" branch only pays for the network after that slot.
Slots whose output equals the host's (DORMANT, GERMINATED, TRAINING, embargo stages) contribute exactly 0.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor
from torch.nn import functional as F

from esper.kasmina import MorphogeneticModel
from esper.leyline import CONTRIBUTING_STAGES, Stage


def contributing_slots(model: MorphogeneticModel) -> list[str]:
    """Slots (execution order) whose seed can change the output now."""
    return [n for n, s in model.slots.items()
            if s.seed is not None and (s.stage is Stage.FOSSILIZED or (s.stage in CONTRIBUTING_STAGES and s.alpha > 0))]


@torch.no_grad()
def fused_logits(model: MorphogeneticModel, x: Tensor, slots: list[str]) -> Tensor:
    """Logits of 1 + len(slots) configurations: (K, B, classes); [0] as-is, [1 + i] with slots[i] off."""
    if model.training:
        raise RuntimeError("fused_logits needs model.eval(): in train mode BatchNorm would mix the forked branches")
    batch = x.shape[0]
    off = set(slots)

    def inject(name: str, h: Tensor) -> Tensor:  # h: (G·B, ...), G = branches forked so far
        slot = model.slot(name)
        out = h if slot.seed is None else slot(h)
        if name in off:
            out = torch.cat([out, h[:batch]])  # fork: the as-is branch (group 0) without this slot
        return out

    logits = model.host.forward_through(x, inject)  # (K·B, classes)
    return logits.view(1 + len(slots), batch, -1)  # (K·B, C) → (K, B, C)


@torch.no_grad()
def evaluate_with_counterfactuals(
    model: MorphogeneticModel, batches: Iterable[tuple[Tensor, Tensor]]
) -> tuple[float, float, dict[str, float]]:
    """(as-is loss, as-is accuracy, {slot: contribution}) over `batches`; every slot gets a value."""
    slots = contributing_slots(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros(1 + len(slots))
    loss_sum, n = 0.0, 0
    for x, y in batches:
        logits = fused_logits(model, x, slots)
        correct += (logits.argmax(-1) == y).sum(dim=1).float().cpu()
        loss_sum += float(F.cross_entropy(logits[0], y, reduction="sum"))
        n += y.shape[0]
    model.train(was_training)
    acc = correct / max(n, 1)
    contrib = {name: 0.0 for name in model.slots}
    for i, name in enumerate(slots):
        contrib[name] = float(acc[0] - acc[1 + i])
    return loss_sum / max(n, 1), float(acc[0]), contrib
