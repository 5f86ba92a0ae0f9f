"""Suite-wide settings: deterministic torch, a modest hypothesis profile (helpers are importable as `_support`:
pyproject's `pythonpath = ["tests"]`)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# The suite's tensors are tiny: intra-op parallelism buys nothing, and on a busy 2-core machine OpenMP threads
# spinning at barriers made the stateful test ~8× slower (64 s instead of 7 s). One thread keeps timings stable.
torch.set_num_threads(1)

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


@pytest.fixture(scope="session")
def ray_session():
    """One throwaway local Ray cluster for the whole suite (ray.init costs seconds): 2 CPUs and 2 *logical*
    GPUs (CUDA is not visible), loopback only, token auth on (as every cluster we start: esper.runtime.local_ray),
    no dashboard, Serve's listeners kept on loopback too (launch.runtime_env), stopped by its own handle."""
    import ray

    from esper.runtime import local_ray
    from esper.serve import launch

    local_ray.init(None, num_cpus=2, num_gpus=2, include_dashboard=False, object_store_memory=150 * 1024**2,
                   log_to_driver=False, configure_logging=False, runtime_env=launch.runtime_env())
    yield ray
    ray.shutdown()
