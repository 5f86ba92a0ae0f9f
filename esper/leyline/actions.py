"""The factored action (heads op, slot, blueprint, blend) and the one pure function that masks it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Sequence

import numpy as np

from esper.leyline.blending import BlendCurve
from esper.leyline.signals import SlotReport
from esper.leyline.stages import ADVANCE_TARGET, LIVE_STAGES, Stage

HEADS: tuple[str, ...] = ("op", "slot", "blueprint", "blend")


class Op(IntEnum):
    """What Tamiyo does at a decision point."""

    WAIT = 0
    GERMINATE = 1
    ADVANCE = 2
    CULL = 3
    WITHER = 4
    """Start Emrakul's audit of a fossil (FOSSILIZED → WITHERING); only in layouts with `audit`."""
    REVIVE = 5
    """End an audit by keeping the seed (WITHERING → FOSSILIZED, α = 1); only in layouts with `audit`."""


PRE_AUDIT_OPS: tuple[Op, ...] = (Op.WAIT, Op.GERMINATE, Op.ADVANCE, Op.CULL)
"""The op head of a layout without audits (every agent trained before Emrakul): a prefix of Op."""

# Heads each op reads; the others are forced to index 0 so they add no log-prob or entropy.
OP_USES: dict[Op, frozenset[str]] = {
    Op.WAIT: frozenset(),
    Op.GERMINATE: frozenset({"slot", "blueprint", "blend"}),
    Op.ADVANCE: frozenset({"slot"}),
    Op.CULL: frozenset({"slot"}),
    Op.WITHER: frozenset({"slot"}),
    Op.REVIVE: frozenset({"slot"}),
}


@dataclass(frozen=True)
class FactoredAction:
    """One decision: indices into each head."""

    op: Op
    slot: int = 0
    blueprint: int = 0
    blend: int = 0

    def as_array(self) -> np.ndarray:
        return np.array([int(self.op), self.slot, self.blueprint, self.blend], dtype=np.int64)

    @classmethod
    def from_array(cls, arr: Sequence[int]) -> "FactoredAction":
        if len(arr) != len(HEADS):
            raise ValueError(f"an action has {len(HEADS)} heads {HEADS}, got {len(arr)} values")
        return cls(Op(int(arr[0])), int(arr[1]), int(arr[2]), int(arr[3]))


@dataclass(frozen=True)
class ActionSpec:
    """Sizes and meanings of the heads for one plane."""

    slots: tuple[str, ...]
    blueprints: tuple[str, ...]
    tempos: tuple[int, ...]
    curves: tuple[BlendCurve, ...]
    blueprint_allowed: tuple[tuple[bool, ...], ...]
    """[slot][blueprint]: static compatibility (kind of injection point, G0 parameter budget)."""
    slot_widths: tuple[int, ...] = ()
    """Channels (or width) at each slot; empty when unknown."""
    audit: bool = False
    """The op head also offers WITHER and REVIVE, and CULL reaches a withered fossil (`kasmina.audit_actions`).
    False: the layout every agent trained before Emrakul plays (its op head, features and masks unchanged)."""

    def __post_init__(self) -> None:
        shape = (len(self.slots), len(self.blueprints))
        if np.asarray(self.blueprint_allowed, dtype=bool).shape != shape:
            raise ValueError(f"blueprint_allowed must have shape {shape} (slots × blueprints)")
        if not self.slots or not self.blueprints or not self.tempos or not self.curves:
            raise ValueError("an ActionSpec needs ≥1 slot, blueprint, tempo and curve")
        if self.slot_widths and len(self.slot_widths) != len(self.slots):
            raise ValueError("slot_widths must give one width per slot")

    @property
    def ops(self) -> tuple[Op, ...]:
        """The op head's entries, in index order."""
        return tuple(Op) if self.audit else PRE_AUDIT_OPS

    @property
    def nvec(self) -> tuple[int, int, int, int]:
        """Head sizes, in HEADS order (the MultiDiscrete action space)."""
        return (len(self.ops), len(self.slots), len(self.blueprints), len(self.tempos) * len(self.curves))

    @property
    def mask_size(self) -> int:
        n_op, n_slot, n_bp, n_blend = self.nvec
        return n_op + n_op * n_slot + n_slot * n_bp + n_blend

    def blend_choice(self, index: int) -> tuple[int, BlendCurve]:
        """(tempo, curve) of a blend-head index (tempo-major)."""
        return self.tempos[index // len(self.curves)], self.curves[index % len(self.curves)]

    def blend_index(self, tempo: int, curve: BlendCurve) -> int:
        return self.tempos.index(tempo) * len(self.curves) + self.curves.index(curve)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (for agent.pt manifests and JSON)."""
        return {
            "slots": list(self.slots),
            "blueprints": list(self.blueprints),
            "tempos": list(self.tempos),
            "curves": [c.value for c in self.curves],
            "blueprint_allowed": [list(row) for row in self.blueprint_allowed],
            "slot_widths": list(self.slot_widths),
            "audit": self.audit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ActionSpec":
        return cls(
            slots=tuple(d["slots"]),
            blueprints=tuple(d["blueprints"]),
            tempos=tuple(int(t) for t in d["tempos"]),
            curves=tuple(BlendCurve(c) for c in d["curves"]),
            blueprint_allowed=tuple(tuple(bool(b) for b in row) for row in d["blueprint_allowed"]),
            slot_widths=tuple(int(w) for w in d.get("slot_widths", ())),
            audit=bool(d.get("audit", False)),  # agents saved before Emrakul have no audit ops
        )


def _one_hot(n: int, index: int = 0) -> np.ndarray:
    row = np.zeros(n, dtype=bool)
    row[index] = True
    return row


@dataclass(frozen=True)
class ActionMasks:
    """Per-head masks; later heads are conditioned on earlier ones (op → slot → blueprint/blend)."""

    op: np.ndarray  # (n_ops,)
    slot: np.ndarray  # (n_ops, n_slots): legal slots given the op
    blueprint: np.ndarray  # (n_slots, n_blueprints): legal blueprints given the slot (GERMINATE)
    blend: np.ndarray  # (n_blend,): legal blend schedules (GERMINATE)

    def flat(self) -> np.ndarray:
        """The flat float32 mask carried in observations: op | slot-by-op | blueprint-by-slot | blend."""
        parts = (self.op, self.slot.ravel(), self.blueprint.ravel(), self.blend)
        return np.concatenate(parts).astype(np.float32)

    @classmethod
    def from_flat(cls, spec: ActionSpec, flat: np.ndarray) -> "ActionMasks":
        n_op, n_slot, n_bp, n_blend = spec.nvec
        flat = np.asarray(flat)
        if flat.shape != (spec.mask_size,):
            raise ValueError(f"flat mask must have shape ({spec.mask_size},), got {flat.shape}")
        bits = flat > 0.5
        cuts = np.cumsum([n_op, n_op * n_slot, n_slot * n_bp])
        op, slot, bp, blend = np.split(bits, cuts)
        return cls(op, slot.reshape(n_op, n_slot), bp.reshape(n_slot, n_bp), blend)

    def head_masks(self, op: int, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks of slot, blueprint and blend heads once op (and slot) are chosen."""
        uses = OP_USES[Op(op)]
        bp = self.blueprint[slot] if "blueprint" in uses else _one_hot(self.blueprint.shape[1])
        blend = self.blend if "blend" in uses else _one_hot(self.blend.shape[0])
        return self.slot[op], bp, blend

    def allows(self, action: FactoredAction) -> bool:
        """True when every head of `action` is legal (irrelevant heads must be 0; out-of-range is illegal)."""
        sizes = (self.op.shape[0], self.slot.shape[1], self.blueprint.shape[1], self.blend.shape[0])
        if not all(0 <= int(v) < n for v, n in zip(action.as_array(), sizes)):
            return False
        if not self.op[action.op]:
            return False
        slot_mask, bp_mask, blend_mask = self.head_masks(action.op, action.slot)
        return bool(slot_mask[action.slot] and bp_mask[action.blueprint] and blend_mask[action.blend])


def compute_masks(spec: ActionSpec, reports: Sequence[SlotReport]) -> ActionMasks:
    """The one pure mask function: legal actions given the slots' reports (in spec.slots order)."""
    if [r.name for r in reports] != list(spec.slots):
        raise ValueError(f"reports must cover slots {spec.slots} in order, got {[r.name for r in reports]}")
    n_op, n_slot, n_bp, n_blend = spec.nvec
    allowed_bp = np.asarray(spec.blueprint_allowed, dtype=bool)
    slot = np.zeros((n_op, n_slot), dtype=bool)
    for i, r in enumerate(reports):
        slot[Op.GERMINATE, i] = r.stage is Stage.DORMANT and bool(allowed_bp[i].any())
        slot[Op.ADVANCE, i] = r.stage in ADVANCE_TARGET and r.gate_open
        withered = spec.audit and r.stage is Stage.WITHERING and r.gate_open  # G6: α has reached 0
        slot[Op.CULL, i] = r.stage in LIVE_STAGES or withered
        if spec.audit:
            slot[Op.WITHER, i] = r.stage is Stage.FOSSILIZED
            slot[Op.REVIVE, i] = r.stage is Stage.WITHERING
    op = slot.any(axis=1)
    op[Op.WAIT] = True
    for o in spec.ops:  # rows of unusable ops and of WAIT point at slot 0 so the mask stays well-formed
        if not OP_USES[o] or not op[o]:
            slot[o] = _one_hot(n_slot)
    return ActionMasks(op=op, slot=slot, blueprint=allowed_bp.copy(), blend=np.ones(n_blend, dtype=bool))
