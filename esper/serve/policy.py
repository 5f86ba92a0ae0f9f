"""The decision engine behind the HTTP API: a loaded agent.pt turning (features, mask) rows into actions.

Pure torch and numpy, no Ray: the Serve replica wraps it, and tests compare HTTP answers with it directly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from esper.leyline import ActionMasks, ActionSpec, FactoredAction, Op
from esper.leyline.actions import OP_USES
from esper.tamiyo.agent_file import Agent, load_agent


class BadObservation(ValueError):
    """An observation the policy cannot act on (wrong sizes, malformed mask); the API answers 422."""


@dataclass(frozen=True)
class Choice:
    """One decision: the factored action, its probability under the policy, and the critic's value."""

    action: FactoredAction
    probability: float
    value: float


def file_digest(path: Path) -> str:
    """Short content hash of agent.pt: the policy version clients see (changes on every new export)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_mask(agent: Agent, flat: np.ndarray) -> ActionMasks:
    """Parse a flat mask and refuse ones a policy cannot sample from (all-zero heads, non-binary entries)."""
    spec = agent.spec
    if flat.shape != (spec.mask_size,):
        raise BadObservation(f"action_mask must have {spec.mask_size} entries for this policy, got {flat.size}")
    if not np.all((flat == 0.0) | (flat == 1.0)):
        raise BadObservation("action_mask entries must be 0 or 1")
    masks = ActionMasks.from_flat(spec, flat)
    if not masks.op[Op.WAIT]:
        raise BadObservation("action_mask must allow WAIT (op 0): it is always legal")
    for op in np.flatnonzero(masks.op):
        slots = np.flatnonzero(masks.slot[op])
        if slots.size == 0:
            raise BadObservation(f"action_mask allows op {Op(op).name} but no slot for it")
        uses = OP_USES[Op(op)]
        empty = [int(s) for s in slots if "blueprint" in uses and not masks.blueprint[s].any()]
        if empty:  # the policy may pick any allowed slot, so each one needs a legal blueprint
            raise BadObservation(f"action_mask allows op {Op(op).name} in slot(s) {empty} but no blueprint there")
        if "blend" in uses and not masks.blend.any():
            raise BadObservation(f"action_mask allows op {Op(op).name} but no blend choice")
    return masks


def sound_masks(spec: ActionSpec, flat: np.ndarray) -> np.ndarray:
    """check_mask's rules over a (B, mask_size) batch at once: True where it would accept row b. Row by row, the
    numpy calls on 43-entry arrays took most of a 256-row batch request."""
    n_op, n_slot, n_bp, _ = spec.nvec
    op, slot, bp, blend = np.split(flat > 0.5, np.cumsum([n_op, n_op * n_slot, n_slot * n_bp]), axis=1)
    slot, bp_any = slot.reshape(-1, n_op, n_slot), bp.reshape(-1, n_slot, n_bp).any(axis=2)
    sound = ((flat == 0.0) | (flat == 1.0)).all(axis=1) & op[:, Op.WAIT]
    for i, o in enumerate(spec.ops):  # an allowed op needs a slot, and each allowed slot what the op reads
        usable = slot[:, i].any(axis=1)
        if "blueprint" in OP_USES[o]:
            usable &= ~(slot[:, i] & ~bp_any).any(axis=1)
        if "blend" in OP_USES[o]:
            usable &= blend.any(axis=1)
        sound &= ~op[:, i] | usable
    return sound


class ServedPolicy:
    """agent.pt loaded for serving: validates inputs, decides in batches, reports its identity."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.agent = load_agent(self.path)  # weights_only load + manifest check (AgentFileError on mismatch)
        self.version = file_digest(self.path)
        self.n_features = self.agent.net.n_features

    def describe(self) -> dict:
        """What GET /v1/policy returns: enough for a client to check compatibility before asking."""
        spec = self.agent.spec
        return {
            # the file name, never the server's path: a client needs the identity (name + content hash), not our disk
            "version": self.version, "file": self.path.name, "manifest": self.agent.manifest,
            "observation": {"n_features": self.n_features, "feature_names": self.agent.feature_names,
                            "mask_size": spec.mask_size},
            "action": {"heads": ["op", "slot", "blueprint", "blend"], "nvec": list(spec.nvec),
                       "ops": [o.name for o in spec.ops], **spec.to_dict()},
            "provenance": {k: v for k, v in self.agent.provenance.items() if k != "config"},
        }

    def canary(self) -> None:
        """Health probe: a forward pass on a fixed observation must give a finite, legal WAIT."""
        n_op, n_slot, n_bp, n_blend = self.agent.spec.nvec
        mask = np.concatenate([np.eye(n_op)[0], np.tile(np.eye(n_slot)[0], n_op), np.ones(n_slot * n_bp + n_blend)])
        try:
            choice = self.decide(np.zeros((1, self.n_features), np.float32), mask[None].astype(np.float32), [False], [None])[0]
        except (ValueError, RuntimeError) as exc:  # e.g. NaN weights: torch refuses NaN logits
            raise RuntimeError(f"policy canary failed on {self.path}: {exc}") from None
        if choice.action.op != Op.WAIT or not np.isfinite([choice.probability, choice.value]).all():
            raise RuntimeError(f"policy canary failed on {self.path}: {choice}")

    def prepare(self, features: list[float], mask: list[float]) -> tuple[np.ndarray, np.ndarray, ActionMasks]:
        """Shape-check one observation (values are already finite: the request schema refuses NaN/inf)."""
        with np.errstate(over="ignore"):  # overflow to inf is refused just below
            f = np.asarray(features, dtype=np.float32)
            m = np.asarray(mask, dtype=np.float32)
        if f.shape != (self.n_features,):
            raise BadObservation(f"features must have {self.n_features} entries for this policy, got {f.size}")
        if not np.isfinite(f).all():  # finite in JSON (float64) but beyond float32's range
            raise BadObservation("features must be finite float32 values (|x| < 3.4e38)")
        return f, m, check_mask(self.agent, m)

    def prepare_batch(self, features: list[list[float]],
                      masks: list[list[float]]) -> tuple[np.ndarray, np.ndarray] | None:
        """Many observations at once: (B, F) features and (B, M) masks if every row passes `prepare`'s checks, else
        None (the caller then checks row by row, to name the first bad row in `prepare`'s words)."""
        with np.errstate(over="ignore"):  # overflow to inf is refused just below
            try:
                f = np.asarray(features, dtype=np.float32)
                m = np.asarray(masks, dtype=np.float32)
            except ValueError:  # rows of different lengths
                return None
        if f.shape[1:] != (self.n_features,) or m.shape[1:] != (self.agent.spec.mask_size,):
            return None
        return (f, m) if np.isfinite(f).all() and sound_masks(self.agent.spec, m).all() else None

    def decide_rows(self, rows: list[tuple[np.ndarray, np.ndarray, bool, int | None]]) -> list[Choice]:
        """Prepared rows (features, mask, sample, seed) → one choice each, in one pass."""
        features, masks = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        return self.decide(features, masks, [r[2] for r in rows], [r[3] for r in rows])

    @torch.no_grad()
    def decide(self, features: np.ndarray, masks: np.ndarray, sample: list[bool], seeds: list[int | None]) -> list[Choice]:
        """Rows (B, F) and (B, M) → B choices; greedy rows and sampled rows (each with its own seed) in one pass."""
        f, m = torch.as_tensor(features), torch.as_tensor(masks)
        out = self.agent.net(f, m, mode="greedy")
        actions, logp = out.actions, out.logp
        for i in [i for i, s in enumerate(sample) if s]:  # sampled rows: per-request generator → reproducible
            g = torch.Generator().manual_seed(seeds[i] if seeds[i] is not None else int.from_bytes(os.urandom(4), "little"))
            row = self.agent.net(f[i:i + 1], m[i:i + 1], mode="sample", generator=g)
            actions[i], logp[i] = row.actions[0], row.logp[0]
        values = out.value if out.value is not None else self.agent.net.value(f)  # the core gives it in its pass
        # whole tensors to lists first: indexing them row by row cost as much as the policy pass on 256 rows
        return [Choice(FactoredAction.from_array(a), p, v)
                for a, p, v in zip(actions.tolist(), logp.exp().tolist(), values.tolist())]
