"""Neural Tamiyo: an MLP over the observation features with factored, masked, autoregressive heads.

op is sampled first; slot is conditioned on op; blueprint and blend on op and slot. Masked logits add
clamp(log(mask), FLOAT_MIN) — never −inf — so masked entries get probability 0 without NaNs. Heads an op
does not read are masked to index 0 (probability 1, log-prob 0, entropy 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from esper.leyline import Op

FLOAT_MIN = torch.finfo(torch.float32).min


def masked(logits: Tensor, mask: Tensor) -> Tensor:
    return logits + torch.clamp(torch.log(mask), min=FLOAT_MIN)


def split_mask(mask: Tensor, nvec: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flat mask (B, M) → op (B, O), slot-by-op (B, O, S), blueprint-by-slot (B, S, P), blend (B, L)."""
    n_op, n_slot, n_bp, n_blend = nvec
    op, slot, bp, blend = torch.split(mask, [n_op, n_op * n_slot, n_slot * n_bp, n_blend], dim=-1)
    return op, slot.reshape(-1, n_op, n_slot), bp.reshape(-1, n_slot, n_bp), blend


@dataclass
class PolicyOutput:
    actions: Tensor  # (B, 4) int64
    logits: Tensor  # (B, sum(nvec)) masked, conditioned on `actions`
    logp: Tensor  # (B,)
    entropy: Tensor  # (B,) sum of the conditional heads' entropies
    value: Tensor | None = None  # (B,) the critic's value when the network computes it in the same pass (the core)


def head_picker(actions: Tensor | None, mode: str, generator: torch.Generator | None):
    """pick(logits, head) → the head's choice: teacher-forced from `actions`, the argmax ('greedy'), or sampled."""
    def pick(logits: Tensor, head: int) -> Tensor:
        if actions is not None:
            return actions[:, head].long()
        if mode == "greedy":
            return logits.argmax(-1)
        return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
    return pick


def factored_output(heads: tuple[Tensor, Tensor, Tensor, Tensor], chosen: list[Tensor],
                    value: Tensor | None = None) -> PolicyOutput:
    """The factored action from its four conditional heads' masked logits and choices: log-prob and entropy are
    the sums over the heads."""
    acts = torch.stack(chosen, dim=-1)
    logp = sum(F.log_softmax(h, -1).gather(-1, a[:, None]).squeeze(-1) for h, a in zip(heads, acts.unbind(-1)))
    entropy = sum(torch.distributions.Categorical(logits=h).entropy() for h in heads)
    return PolicyOutput(acts, torch.cat(heads, dim=-1), logp, entropy, value)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class TamiyoPolicyNet(nn.Module):
    """Actor (factored autoregressive heads) + critic, over (features, flat mask)."""

    def __init__(self, n_features: int, nvec: tuple[int, int, int, int], hidden: int = 128) -> None:
        super().__init__()
        self.n_features, self.nvec, self.hidden = n_features, tuple(int(n) for n in nvec), hidden
        n_op, n_slot, n_bp, n_blend = self.nvec
        self.trunk = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.op_head = nn.Linear(hidden, n_op)
        self.slot_head = nn.Linear(hidden + n_op, n_slot)
        self.blueprint_head = nn.Linear(hidden + n_op + n_slot, n_bp)
        self.blend_head = nn.Linear(hidden + n_op + n_slot, n_blend)
        self.value_net = _mlp(n_features, hidden, 1)
        for head in (self.op_head, self.slot_head, self.blueprint_head, self.blend_head):
            nn.init.normal_(head.weight, std=0.01)  # near-uniform initial policy over legal actions
            nn.init.zeros_(head.bias)

    def value(self, features: Tensor) -> Tensor:
        return self.value_net(features).squeeze(-1)

    def forward(self, features: Tensor, mask: Tensor, actions: Tensor | None = None, mode: str = "sample",
                generator: torch.Generator | None = None) -> PolicyOutput:
        """mode: 'sample' | 'greedy' (pick each head), or pass `actions` (B, 4) to teacher-force them."""
        n_op, n_slot, n_bp, n_blend = self.nvec
        op_m, slot_m, bp_m, blend_m = split_mask(mask, self.nvec)
        rows = torch.arange(features.shape[0], device=features.device)
        z = self.trunk(features)
        pick = head_picker(actions, mode, generator)

        op_logits = masked(self.op_head(z), op_m)
        op = pick(op_logits, 0)
        op_1h = F.one_hot(op, n_op).float()
        slot_logits = masked(self.slot_head(torch.cat([z, op_1h], -1)), slot_m[rows, op])
        slot = pick(slot_logits, 1)
        ctx = torch.cat([z, op_1h, F.one_hot(slot, n_slot).float()], -1)
        germ = (op == Op.GERMINATE).unsqueeze(-1)
        first_bp = F.one_hot(torch.zeros_like(op), n_bp).float()
        first_blend = F.one_hot(torch.zeros_like(op), n_blend).float()
        bp_logits = masked(self.blueprint_head(ctx), torch.where(germ, bp_m[rows, slot], first_bp))
        bp = pick(bp_logits, 2)
        blend_logits = masked(self.blend_head(ctx), torch.where(germ, blend_m, first_blend))
        blend = pick(blend_logits, 3)

        return factored_output((op_logits, slot_logits, bp_logits, blend_logits), [op, slot, bp, blend])
