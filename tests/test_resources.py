"""Sizing EnvRunners from the cluster's resources (plan_runners) and choosing an actor's device (actor_device).
Pure functions: no Ray cluster is started."""

from __future__ import annotations

import pytest
import torch

from esper.runtime import devices
from esper.runtime.devices import actor_device, assigned_gpu_ids
from esper.runtime.resources import RunnerPlan, plan_runners

EPS = 1e-9


def assert_fits(plan: RunnerPlan) -> None:
    """What build_algo() needs: the runners' total request never exceeds the cluster."""
    assert plan.cpus_per_runner >= 0 and plan.gpus_per_runner >= 0
    assert plan.num_env_runners * plan.cpus_per_runner <= plan.cluster_cpus + EPS
    assert plan.num_env_runners * plan.gpus_per_runner <= plan.cluster_gpus + EPS
    assert plan.cpus_per_runner <= 1.0 and plan.gpus_per_runner <= max(1.0, plan.cluster_gpus)


# ---------------------------------------------------------------------------------------------- CPU


def test_two_cpus_no_gpu_is_cpu_only_and_fits():
    plan = plan_runners({"CPU": 2.0})
    assert plan.num_env_runners >= 1
    assert 0 < plan.cpus_per_runner <= 2
    assert plan.num_env_runners * plan.cpus_per_runner <= 2.0
    assert plan.gpus_per_runner == 0
    assert (plan.cluster_cpus, plan.cluster_gpus) == (2.0, 0.0)
    assert_fits(plan)
    assert "CPU only" in plan.describe()


def test_two_cpus_one_requested_runner():
    plan = plan_runners({"CPU": 2.0, "GPU": 0.0}, requested=1)
    assert (plan.num_env_runners, plan.cpus_per_runner, plan.gpus_per_runner) == (1, 1.0, 0.0)


# The documented default: one runner per CPU on small machines (≤ 4 CPUs), one CPU left for the driver on
# bigger ones, at most 8.
@pytest.mark.parametrize("cpus,expected", [(0.5, 1), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (8, 7), (9, 8), (64, 8)])
def test_default_runner_count(cpus, expected):
    plan = plan_runners({"CPU": float(cpus)})
    assert plan.num_env_runners == expected
    assert plan.cpus_per_runner == min(1.0, cpus)
    assert plan.gpus_per_runner == 0
    assert_fits(plan)


@pytest.mark.parametrize("cpus,requested", [(2, 3), (2, 5), (1, 4), (3, 7), (4, 6), (2.5, 3), (6, 9)])
def test_more_runners_than_cpus_get_fractional_shares(cpus, requested):
    plan = plan_runners({"CPU": float(cpus)}, requested=requested)
    assert plan.num_env_runners == requested
    assert 0 < plan.cpus_per_runner < 1.0
    assert requested * plan.cpus_per_runner <= cpus + EPS
    assert plan.gpus_per_runner == 0
    assert_fits(plan)


def test_fractional_shares_never_oversubscribe_over_a_grid():
    for cpus in [0.5, 1, 1.5, 2, 3, 4, 6, 7, 8, 12, 16, 33]:
        for n in range(1, 70):
            for gpus in (0, 1, 2, 3):
                assert_fits(plan_runners({"CPU": float(cpus), "GPU": float(gpus)}, requested=n))


def test_fewer_runners_than_cpus_get_one_cpu_each():
    plan = plan_runners({"CPU": 16.0}, requested=4)
    assert (plan.num_env_runners, plan.cpus_per_runner) == (4, 1.0)


def test_zero_runners_samples_in_the_driver():
    plan = plan_runners({"CPU": 4.0, "GPU": 1.0}, requested=0)
    assert (plan.num_env_runners, plan.cpus_per_runner, plan.gpus_per_runner) == (0, 0.0, 0.0)


@pytest.mark.parametrize("resources", [{}, {"CPU": 0.0}, {"GPU": 2.0}, {"CPU": -1.0, "GPU": 1.0}])
def test_no_cpus_raises(resources):
    with pytest.raises(ValueError, match="no CPUs"):
        plan_runners(resources)


# ---------------------------------------------------------------------------------------------- GPU


def test_gpus_are_spread_over_the_runners():
    plan = plan_runners({"CPU": 8.0, "GPU": 2.0}, requested=4)
    assert plan.num_env_runners == 4
    assert plan.gpus_per_runner == 0.5
    assert plan.cpus_per_runner == 1.0
    assert_fits(plan)
    assert "0.5 GPU each" in plan.describe()


@pytest.mark.parametrize("cpus,gpus,requested,share", [(8, 1, 3, 0.33), (8, 2, 1, 1.0), (8, 4, 2, 1.0), (4, 1, 2, 0.5)])
def test_gpu_share_is_floored_and_capped_at_one(cpus, gpus, requested, share):
    plan = plan_runners({"CPU": float(cpus), "GPU": float(gpus)}, requested=requested)
    assert plan.gpus_per_runner == pytest.approx(share)
    assert_fits(plan)


def test_explicit_gpu_share_is_used_when_it_fits():
    plan = plan_runners({"CPU": 8.0, "GPU": 2.0}, requested=4, gpus_per_runner=0.25)
    assert plan.gpus_per_runner == 0.25
    assert_fits(plan)


@pytest.mark.parametrize("resources,requested,share", [
    ({"CPU": 8.0, "GPU": 2.0}, 4, 1.0),  # 4 GPUs asked, 2 present
    ({"CPU": 8.0, "GPU": 1.0}, 3, 0.5),
    ({"CPU": 8.0}, 2, 0.5),  # any GPU on a GPU-less cluster
    ({"CPU": 2.0}, None, 1.0),
    ({"CPU": 4.0, "GPU": 1.0}, None, 0.5),  # default 4 runners × 0.5 GPU > 1 GPU
])
def test_explicit_gpu_share_exceeding_the_cluster_raises(resources, requested, share):
    with pytest.raises(ValueError, match="exceeds"):
        plan_runners(resources, requested=requested, gpus_per_runner=share)


def test_explicit_zero_gpu_share_on_a_gpu_cluster():
    plan = plan_runners({"CPU": 8.0, "GPU": 2.0}, requested=4, gpus_per_runner=0.0)
    assert plan.gpus_per_runner == 0.0


# ---------------------------------------------------------------------------------------------- devices


def test_actor_device_explicit_cpu():
    assert actor_device("cpu") == torch.device("cpu")


def test_actor_device_explicit_cuda_is_taken_verbatim():
    assert actor_device("cuda:1") == torch.device("cuda", 1)  # no CUDA needed to name a device


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_actor_device_auto_is_cpu_without_cuda():
    assert actor_device("auto") == torch.device("cpu")
    assert actor_device() == torch.device("cpu")


def test_auto_without_cuda_is_cpu_even_if_ray_assigned_a_gpu(monkeypatch):
    import ray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert actor_device("auto") == torch.device("cpu")


def test_auto_with_cuda_outside_ray_is_cuda0(monkeypatch):
    import ray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert actor_device("auto") == torch.device("cuda", 0)


def test_auto_with_cuda_in_a_ray_actor_without_a_gpu_is_cpu(monkeypatch):
    import ray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert actor_device("auto") == torch.device("cpu")


def test_auto_with_cuda_in_a_ray_actor_with_a_gpu_is_cuda0(monkeypatch):
    import ray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])  # Ray sets CUDA_VISIBLE_DEVICES: it is cuda:0 inside
    assert actor_device("auto") == torch.device("cuda", 0)


def test_assigned_gpu_ids_outside_ray_is_empty(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # other test files may run a local Ray session
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])  # must not even be asked
    assert assigned_gpu_ids() == []


def test_assigned_gpu_ids_survives_ray_errors(monkeypatch):
    import ray

    def boom():
        raise RuntimeError("not in a worker")

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", boom)
    assert devices.assigned_gpu_ids() == []
