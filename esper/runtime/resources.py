"""Size EnvRunners from what the cluster really has, so build_algo() never waits for absent resources."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerPlan:
    num_env_runners: int
    cpus_per_runner: float
    gpus_per_runner: float
    cluster_cpus: float
    cluster_gpus: float

    def describe(self) -> str:
        where = (f"{self.gpus_per_runner:g} GPU each" if self.gpus_per_runner
                 else "CPU only" + (" (no GPU in the cluster)" if not self.cluster_gpus else ""))
        return (f"{self.num_env_runners} env runner(s) × {self.cpus_per_runner:g} CPU, {where} "
                f"[cluster: {self.cluster_cpus:g} CPU, {self.cluster_gpus:g} GPU]")


def plan_runners(resources: dict[str, float], requested: int | None = None, gpus_per_runner: float | None = None) -> RunnerPlan:
    """Runners and their CPU/GPU shares from `ray.cluster_resources()` / `available_resources()`.

    CPU: up to one CPU per runner, fractional when runners outnumber CPUs (whole CPUs beyond the cluster
    make build_algo() hang). GPU: never requested when the cluster has none (RLlib crashes if CUDA can't see
    them); otherwise spread over the runners (fractional allowed) unless given."""
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    if cpus <= 0:
        raise ValueError("the Ray cluster reports no CPUs; cannot place env runners")
    # Default: one runner per CPU on small machines (the driver's learner mostly waits while runners sample),
    # one CPU left for the driver on bigger ones; at most 8.
    n = requested if requested is not None else max(1, min(int(cpus) if cpus <= 4 else int(cpus) - 1, 8))
    if n == 0:  # sample in the driver process itself
        return RunnerPlan(0, 0.0, 0.0, cpus, gpus)
    cpu_share = min(1.0, math.floor(cpus / n * 100) / 100)
    if gpus_per_runner is None:
        gpu_share = min(1.0, math.floor(gpus / n * 100) / 100) if gpus > 0 else 0.0
    else:
        if gpus_per_runner > 0 and gpus_per_runner * n > gpus + 1e-9:
            raise ValueError(f"{n} runners × {gpus_per_runner} GPU exceeds the cluster's {gpus:g} GPU(s)")
        gpu_share = gpus_per_runner
    return RunnerPlan(n, cpu_share, gpu_share, cpus, gpus)


def cuda_usable_on_gpu_workers(gpus: float = 1.0, timeout_s: float = 300.0) -> bool:
    """Ask a GPU-holding Ray task whether CUDA really works there. Logical GPUs (`ray.init(num_gpus=2)` on a
    CPU machine, or a misconfigured node) would otherwise make RLlib move modules to a CUDA that isn't there."""
    import ray

    @ray.remote(num_gpus=gpus, num_cpus=0)
    def _probe() -> bool:
        import torch

        return bool(ray.get_gpu_ids()) and torch.cuda.is_available()

    try:
        return bool(ray.get(_probe.remote(), timeout=timeout_s))
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
        return False
