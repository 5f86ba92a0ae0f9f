"""α schedules: how a seed's blend weight ramps from 0 to 1 (pure math, no torch)."""

from __future__ import annotations

import math
from enum import Enum


class BlendCurve(str, Enum):
    """Shape of the α ramp over a blend's tempo."""

    LINEAR = "linear"
    COSINE = "cosine"
    SIGMOID = "sigmoid"


_SIGMOID_STEEPNESS = 10.0


def alpha_at(step: int, tempo: int, curve: BlendCurve) -> float:
    """α after `step` blending epochs of a ramp that lasts `tempo` epochs.

    Exactly 0 at step 0 and exactly 1 at step ≥ tempo, for every curve.
    """
    if tempo < 1:
        raise ValueError(f"blend tempo must be ≥ 1 epoch, got {tempo}")
    if step <= 0:
        return 0.0
    if step >= tempo:
        return 1.0
    t = step / tempo
    if curve is BlendCurve.LINEAR:
        return t
    if curve is BlendCurve.COSINE:
        return 0.5 - 0.5 * math.cos(math.pi * t)
    # Logistic rescaled so its ends are exactly 0 and 1.
    lo = 1.0 / (1.0 + math.exp(_SIGMOID_STEEPNESS / 2))
    hi = 1.0 - lo
    raw = 1.0 / (1.0 + math.exp(-_SIGMOID_STEEPNESS * (t - 0.5)))
    return (raw - lo) / (hi - lo)
