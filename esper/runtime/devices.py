"""Which device an actor (RLlib EnvRunner, Serve replica) trains on."""

from __future__ import annotations

import torch


def assigned_gpu_ids() -> list:
    """GPU ids Ray assigned to the current actor/task ([] outside Ray or without GPUs)."""
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # ray missing or not in a worker: no assignment
        return []


def actor_device(preference: str = "auto") -> torch.device:
    """'auto': cuda:0 only if Ray assigned this actor a GPU *and* CUDA can see one (Ray sets
    CUDA_VISIBLE_DEVICES, so the assigned GPU is cuda:0); outside Ray, CUDA if available; else CPU."""
    if preference != "auto":
        return torch.device(preference)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        import ray

        in_ray = ray.is_initialized()
    except ImportError:
        in_ray = False
    if in_ray and not assigned_gpu_ids():
        return torch.device("cpu")  # Ray gave this actor no GPU: do not grab one behind its back
    return torch.device("cuda:0")
