"""Suite-wide settings: deterministic torch, a modest hypothesis profile, helpers importable as `_support`."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))  # `from _support import ...` regardless of pytest's import mode

settings.register_profile(
    "esper",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # same examples on every run: the suite is a regression gate, not a fuzzing campaign
    database=None,  # nothing written under the project
)
# HYPOTHESIS_PROFILE=fuzz: random examples, more of them (for hunting bugs by hand, not for CI).
settings.register_profile("fuzz", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "esper"))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
