"""A layout-free Tamiyo core: one set of weights that decides in any world, whatever its slots and blueprints.

`TamiyoPolicyNet` is an MLP whose input width and head sizes are the world's layout (slots × blueprint one-hots);
its weights mean nothing in another world. Here nothing is sized by the layout:

  slots       a set: one shared encoder reads each slot's features, its current seed's *description* and its
              point's description (kind, depth fraction, width), then the slots are mean-pooled
  blueprints  described by features (`describe_layout`: point kind, copy-initialised or not, parameters at a
              reference width and how they scale with width), never by ids
  heads       op: a fixed head over every `Op` (sliced to the layout's ops); slot, blueprint and blend: one score
              per candidate from a shared scorer, so 2 or 50 slots, 3 or 13 blueprints use the same weights

The forward contract is `TamiyoPolicyNet`'s (flat features + flat mask → factored, masked, autoregressive
actions), with the layout's `CoreLayout` alongside. Training, adapters and serving build on this (issue 33).
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from esper.kasmina.blueprints import get_blueprint
from esper.leyline import ActionSpec, BlendCurve, Op
from esper.leyline.features import AUDIT_SLOT_FEATURES, GLOBAL_FEATURES, SLOT_FEATURES_FIXED, feature_size, slot_features
from esper.tamiyo.policy import PolicyOutput, factored_output, head_picker, masked, split_mask

POINT_KINDS = ("conv2d", "vector", "tokens")
SLOT_INPUT = len(SLOT_FEATURES_FIXED) + len(AUDIT_SLOT_FEATURES)
"""A slot's own features, padded to the audit layout's (a layout without audits reads zeros there)."""
POINT_FEATURES = len(POINT_KINDS) + 2  # kind one-hot, depth fraction, log2(width) / 8
BLUEPRINT_FEATURES = len(POINT_KINDS) + 3  # kind one-hot, copy-initialised, log10(params at width 64) / 6, scaling
BLEND_FEATURES = 1 + len(BlendCurve)  # tempo / 8, curve one-hot
REFERENCE_WIDTH = 64


@dataclass(frozen=True)
class CoreLayout:
    """What the core knows of a world's layout, as descriptions (no ids): built once per ActionSpec."""

    spec: ActionSpec
    points: Tensor  # (S, POINT_FEATURES)
    blueprints: Tensor  # (P, BLUEPRINT_FEATURES)
    blends: Tensor  # (L, BLEND_FEATURES)


def describe_blueprint(name: str) -> list[float]:
    """A blueprint as features: its point kind, whether it copies the host, its size and how that scales."""
    bp = get_blueprint(name)
    small, large = bp.param_count(REFERENCE_WIDTH), bp.param_count(2 * REFERENCE_WIDTH)
    scaling = math.log2(large / small) / 2 if small > 0 else 0.0  # ≈ 1 for width², ≈ 0.5 for width-linear
    kind = [float(bp.kind == k) for k in POINT_KINDS]
    return kind + [float(bp.init_from_host is not None), math.log10(max(small, 1)) / 6, scaling]


def describe_layout(spec: ActionSpec) -> CoreLayout:
    """Descriptions of `spec`'s points, blueprints and blend schedules. A slot's point kind is that of the
    blueprints it may hold (all of one kind; none known → zeros); its width is `spec.slot_widths` when known."""
    blueprints = [describe_blueprint(b) for b in spec.blueprints]
    points = []
    for i, allowed in enumerate(spec.blueprint_allowed):
        kinds = {get_blueprint(b).kind for b, ok in zip(spec.blueprints, allowed) if ok}
        kind = [float(k in kinds and len(kinds) == 1) for k in POINT_KINDS]
        depth = i / max(len(spec.slots) - 1, 1)
        width = math.log2(spec.slot_widths[i]) / 8 if spec.slot_widths else 0.0
        points.append(kind + [depth, width])
    blends = [[tempo / 8] + [float(curve == c) for c in BlendCurve] for tempo in spec.tempos for curve in spec.curves]
    as_tensor = lambda rows, width: torch.tensor(rows, dtype=torch.float32).reshape(len(rows), width)
    return CoreLayout(spec, as_tensor(points, POINT_FEATURES), as_tensor(blueprints, BLUEPRINT_FEATURES),
                      as_tensor(blends, BLEND_FEATURES))


def split_features(features: Tensor, spec: ActionSpec) -> tuple[Tensor, Tensor, Tensor]:
    """Flat features (B, F) → global (B, G), each slot's own features padded to SLOT_INPUT (B, S, SLOT_INPUT),
    each slot's blueprint one-hot (B, S, P) — the layout of `esper.leyline.features.encode`."""
    n_global, n_own, n_bp = len(GLOBAL_FEATURES), len(slot_features(spec)), len(spec.blueprints)
    g = features[:, :n_global]
    per_slot = features[:, n_global:].reshape(features.shape[0], len(spec.slots), n_own + n_bp)  # (B, S·(own+P)) → (B, S, own+P)
    own, onehot = per_slot[..., :n_own], per_slot[..., n_own:]
    return g, F.pad(own, (0, SLOT_INPUT - n_own)), onehot


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class TamiyoCore(nn.Module):
    """Actor (factored, masked, autoregressive heads scoring each candidate) + critic, over any layout."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.hidden = hidden
        n_ops = len(Op)
        self.global_enc = _mlp(len(GLOBAL_FEATURES), hidden, hidden)
        self.blueprint_enc = _mlp(BLUEPRINT_FEATURES, hidden, hidden)
        self.slot_enc = _mlp(SLOT_INPUT + hidden + POINT_FEATURES, hidden, hidden)
        self.context = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh())
        self.op_embed = nn.Embedding(n_ops, hidden)
        self.op_head = nn.Linear(hidden, n_ops)
        self.slot_score = _mlp(3 * hidden, hidden, 1)
        self.blueprint_score = _mlp(4 * hidden, hidden, 1)
        self.blend_score = _mlp(3 * hidden + BLEND_FEATURES, hidden, 1)
        self.value_head = _mlp(2 * hidden, hidden, 1)
        for head in (self.op_head, self.slot_score[-1], self.blueprint_score[-1], self.blend_score[-1]):
            nn.init.normal_(head.weight, std=0.01)  # near-uniform initial policy over legal actions
            nn.init.zeros_(head.bias)

    def encode(self, features: Tensor, layout: CoreLayout) -> tuple[Tensor, Tensor, Tensor]:
        """(context (B, H), slot embeddings (B, S, H), blueprint embeddings (P, H))."""
        g, own, onehot = split_features(features, layout.spec)
        bp_emb = self.blueprint_enc(layout.blueprints.to(features))  # (P, H)
        seed_desc = onehot @ bp_emb  # (B, S, P) @ (P, H) → (B, S, H): the seed a slot holds, described
        points = layout.points.to(features).expand(features.shape[0], -1, -1)  # (S, D) → (B, S, D)
        slots = self.slot_enc(torch.cat([own, seed_desc, points], -1))  # (B, S, H)
        context = self.context(torch.cat([self.global_enc(g), slots.mean(1)], -1))  # (B, H)
        return context, slots, bp_emb

    def value(self, features: Tensor, layout: CoreLayout) -> Tensor:
        context, slots, _ = self.encode(features, layout)
        return self._value(context, slots)

    def _value(self, context: Tensor, slots: Tensor) -> Tensor:
        return self.value_head(torch.cat([context, slots.mean(1)], -1)).squeeze(-1)

    def forward(self, features: Tensor, mask: Tensor | None, layout: CoreLayout, actions: Tensor | None = None,
                mode: str = "sample", generator: torch.Generator | None = None) -> PolicyOutput:
        """As `TamiyoPolicyNet.forward`: mode 'sample' | 'greedy', or `actions` (B, 4) to teacher-force them;
        mode 'value' returns the critic's value (B,) instead (one entry point, so adapters can run it functionally)."""
        if mode == "value":
            return self.value(features, layout)
        spec = layout.spec
        n_op, n_slot, n_bp, n_blend = spec.nvec
        op_m, slot_m, bp_m, blend_m = split_mask(mask, spec.nvec)
        batch = features.shape[0]
        rows = torch.arange(batch, device=features.device)
        context, slots, bp_emb = self.encode(features, layout)
        pick = head_picker(actions, mode, generator)

        op_logits = masked(self.op_head(context)[:, :n_op], op_m)  # the layout's ops are the first n_op of Op
        op = pick(op_logits, 0)
        op_emb = self.op_embed(op)  # (B, H)
        per_slot = lambda t: t[:, None, :].expand(-1, n_slot, -1)  # (B, H) → (B, S, H)
        slot_in = torch.cat([slots, per_slot(context), per_slot(op_emb)], -1)
        slot_logits = masked(self.slot_score(slot_in).squeeze(-1), slot_m[rows, op])  # (B, S)
        slot = pick(slot_logits, 1)
        chosen = slots[rows, slot]  # (B, H)
        germ = (op == Op.GERMINATE).unsqueeze(-1)
        ctx = torch.cat([context, op_emb, chosen], -1)  # (B, 3H)
        bp_in = torch.cat([ctx[:, None, :].expand(-1, n_bp, -1), bp_emb.expand(batch, -1, -1)], -1)  # (B, P, 4H)
        first_bp = F.one_hot(torch.zeros_like(op), n_bp).float()
        bp_logits = masked(self.blueprint_score(bp_in).squeeze(-1), torch.where(germ, bp_m[rows, slot], first_bp))
        bp = pick(bp_logits, 2)
        blends = layout.blends.to(features).expand(batch, -1, -1)  # (L, D) → (B, L, D)
        blend_in = torch.cat([ctx[:, None, :].expand(-1, n_blend, -1), blends], -1)  # (B, L, 3H + D)
        first_blend = F.one_hot(torch.zeros_like(op), n_blend).float()
        blend_logits = masked(self.blend_score(blend_in).squeeze(-1), torch.where(germ, blend_m, first_blend))
        blend = pick(blend_logits, 3)

        # the critic's value from the same encoding: a caller that wants both (Serve) skips a second pass
        return factored_output((op_logits, slot_logits, bp_logits, blend_logits), [op, slot, bp, blend],
                               self._value(context, slots))


def core_hash(core: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes in name order): what an adapter names its core by."""
    digest = hashlib.sha256()
    for name, tensor in sorted(core.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LayoutPolicy(nn.Module):
    """The core bound to one world's layout, with `TamiyoPolicyNet`'s call signature (features, mask → actions;
    `value(features)`), so the RLlib module, agent files and Serve take either. With a domain adapter attached
    (`attach`), the core runs on the adapter's merged weights (`esper/tamiyo/adapter.py`); its own never change."""

    def __init__(self, core: TamiyoCore, spec: ActionSpec, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.core, self.spec = core, spec
        self.layout = describe_layout(spec)
        self.n_features, self.nvec, self.hidden = feature_size(spec), tuple(spec.nvec), core.hidden
        self.adapter = None
        self._fused: tuple = ((), None)  # (weight versions, core with the adapter merged in): not a submodule
        if adapter is not None:
            self.attach(adapter)

    def attach(self, adapter: nn.Module) -> "LayoutPolicy":
        """Decide through `adapter` from now on (AdapterError if it was trained on another core)."""
        from esper.tamiyo.adapter import check_fits

        check_fits(adapter, self.core)
        self.adapter = adapter
        return self

    def detach(self) -> nn.Module | None:
        """Take the adapter off (returned); the bare core decides again."""
        adapter, self.adapter = self.adapter, None
        return adapter

    def _run(self, *args, **kwargs):
        if self.adapter is None:
            return self.core(*args, **kwargs)
        if torch.is_grad_enabled():  # training: gradients flow to the adapter through the merged weights
            return torch.func.functional_call(self.core, self.adapter.merged(self.core), args, kwargs)
        return self._fused_core()(*args, **kwargs)

    def _fused_core(self) -> TamiyoCore:
        """For decisions without gradients (Serve, evaluation, env runners): a copy of the core with the adapter's
        deltas merged in, rebuilt only when a weight of either has changed (their tensors' version counters tick on
        every in-place update: optimiser steps, load_state_dict; writes through `.data` are not seen). Swapping parameters in and out per call
        (functional_call) cost several times the decision itself."""
        params = [*self.core.parameters(), *self.adapter.parameters()]
        key = (id(self.core), id(self.adapter), *(p._version for p in params))
        if self._fused[0] != key:
            fused = copy.deepcopy(self.core).requires_grad_(False)
            with torch.no_grad():
                for name, merged in self.adapter.merged(self.core).items():
                    fused.get_parameter(name).copy_(merged)
            self._fused = (key, fused)
        return self._fused[1]

    def forward(self, features: Tensor, mask: Tensor, actions: Tensor | None = None, mode: str = "sample",
                generator: torch.Generator | None = None) -> PolicyOutput:
        return self._run(features, mask, self.layout, actions=actions, mode=mode, generator=generator)

    def value(self, features: Tensor) -> Tensor:
        return self._run(features, None, self.layout, mode="value")
