"""Env actors on a cluster with (logical) GPUs: each is pinned to its own GPU id and still runs on CPU here."""

from __future__ import annotations

import pytest

from esper.runtime.resources import cuda_usable_on_gpu_workers, plan_runners

WORLD = {"data": {"source": "synthetic", "limit": 100, "val_fraction": 0.2},
         "trainer": {"epochs": 2, "batch_size": 16, "max_batches_per_epoch": 1}, "val_images": 20}


def test_two_env_actors_get_distinct_gpus_and_train_on_cpu(ray_session):
    ray = ray_session
    plan = plan_runners(ray.cluster_resources(), requested=2)
    assert plan.gpus_per_runner == 1.0  # two logical GPUs spread over two runners

    @ray.remote(num_cpus=0.5, num_gpus=plan.gpus_per_runner)
    class EnvActor:
        def run(self):
            import numpy as np

            from esper.simic.env import EsperEnv

            env = EsperEnv(WORLD)
            env.reset(seed=0)
            _, reward, *_ = env.step(np.zeros(4, dtype=np.int64))
            return ray.get_gpu_ids(), str(env.device), float(reward)

    actors = [EnvActor.remote() for _ in range(2)]
    results = ray.get([a.run.remote() for a in actors], timeout=300)
    gpu_ids = [tuple(r[0]) for r in results]
    assert all(len(ids) == 1 for ids in gpu_ids) and len(set(gpu_ids)) == 2, gpu_ids
    assert [r[1] for r in results] == ["cpu", "cpu"]  # CUDA is not visible: never crash, train on CPU
    for a in actors:
        ray.kill(a)


def test_logical_gpus_are_detected_as_unusable(ray_session):
    assert cuda_usable_on_gpu_workers(1.0, timeout_s=300) is False


def test_plan_never_requests_whole_cpus_beyond_the_cluster(ray_session):
    plan = plan_runners(ray_session.cluster_resources(), requested=4)
    assert plan.num_env_runners * plan.cpus_per_runner <= ray_session.cluster_resources()["CPU"]
    with pytest.raises(ValueError, match="exceeds"):
        plan_runners(ray_session.cluster_resources(), requested=3, gpus_per_runner=1.0)
