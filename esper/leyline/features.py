"""The observation contract: global training signals + one block per slot (same for heuristic, PPO and Serve)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from esper.leyline.actions import ActionSpec
from esper.leyline.signals import SlotReport, TrainingSignals
from esper.leyline.stages import PRE_AUDIT_STAGES, Stage

GLOBAL_FEATURES = (
    "progress", "train_loss", "val_loss", "val_metric", "delta_metric_1", "delta_metric_2", "delta_metric_3",
    "gap_to_best", "excess_params_ratio", "live_seed_fraction", "budget_spent", "excess_flops_ratio",
    "log10_rent", "budget_epochs",
)
SLOT_FEATURES_FIXED = (
    *(f"stage_{s.name.lower()}" for s in PRE_AUDIT_STAGES), "alpha", "epochs_in_stage", "contribution",
    "has_contribution", "log_grad_norm", "gate_open", "embargo_remaining", "seed_param_ratio",
)
"""A slot's features in a layout without audits (every agent trained before Emrakul): a withering fossil reads as
FOSSILIZED, its α below 1."""
AUDIT_SLOT_FEATURES = ("stage_withering", "churn", "has_churn")
"""Appended to each slot's fixed features in a layout with audit ops (`ActionSpec.audit`)."""


def slot_features(spec: ActionSpec) -> tuple[str, ...]:
    """The fixed per-slot feature names of `spec`'s layout."""
    return SLOT_FEATURES_FIXED + (AUDIT_SLOT_FEATURES if spec.audit else ())


def feature_names(spec: ActionSpec) -> list[str]:
    names = list(GLOBAL_FEATURES)
    for slot in spec.slots:
        names += [f"{slot}/{n}" for n in slot_features(spec)]
        names += [f"{slot}/blueprint_{b}" for b in spec.blueprints]
    return names


def feature_size(spec: ActionSpec) -> int:
    return len(GLOBAL_FEATURES) + len(spec.slots) * (len(slot_features(spec)) + len(spec.blueprints))


FEATURE_BOUND = 5.0  # every feature is clipped to [−5, 5] (the observation space's bounds)


def _clip(x: float, lo: float = -FEATURE_BOUND, hi: float = FEATURE_BOUND) -> float:
    return float(min(max(x, lo), hi)) if math.isfinite(x) else hi


def _delta(hist: Sequence[float], k: int) -> float:
    """Metric change k steps back (0 when the history is too short)."""
    return hist[-k] - hist[-k - 1] if len(hist) > k else 0.0


def encode(spec: ActionSpec, signals: TrainingSignals, reports: Sequence[SlotReport]) -> np.ndarray:
    """Fixed-size float32 features. Losses are divided by the task's chance-level loss so chance level is ≈ 1."""
    chance = signals.chance_loss
    hist = signals.metric_history
    live = sum(r.stage in (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING) for r in reports)
    out = [
        signals.epoch / max(signals.max_epochs, 1),
        _clip(signals.train_loss / chance), _clip(signals.val_loss / chance), signals.val_metric,
        _clip(10 * _delta(hist, 1)), _clip(10 * _delta(hist, 2)), _clip(10 * _delta(hist, 3)),
        _clip(10 * ((max(hist) if hist else 0.0) - signals.val_metric)),
        _clip(signals.excess_params_ratio), live / max(len(reports), 1),
        _clip(signals.budget_spent), _clip(signals.excess_flops_ratio),
        _clip(math.log10(max(signals.rent_lambda, 1e-4))), _clip(signals.budget_host_epochs / 16),
    ]
    for r in reports:
        stage = [0.0] * len(PRE_AUDIT_STAGES)
        withering = r.stage is Stage.WITHERING
        if not withering:
            stage[int(r.stage)] = 1.0
        elif not spec.audit:
            stage[int(Stage.FOSSILIZED)] = 1.0  # the old layout has no WITHERING: the fossil it still is
        contribution = 0.0 if r.contribution is None else _clip(10 * r.contribution)
        grad = 0.0 if r.grad_norm is None else _clip(math.log1p(r.grad_norm))
        bp = [float(r.blueprint == b) for b in spec.blueprints]
        gate_open = r.gate_open and not (withering and not spec.audit)  # G6 only means something with audit ops
        out += [*stage, r.alpha, min(r.epochs_in_stage / 10, 1.0), contribution, float(r.contribution is not None),
                grad, float(gate_open), min(r.embargo_remaining / 5, 1.0),
                _clip(r.seed_params / max(signals.host_params, 1))]
        if spec.audit:
            out += [float(withering), 0.0 if r.churn is None else _clip(10 * r.churn), float(r.churn is not None)]
        out += bp
    return np.asarray(out, dtype=np.float32)
