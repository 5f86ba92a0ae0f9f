"""Grow an autoscaling Ray cluster to what a job needs before RLlib builds its actors, and say where they ran.

RLlib's build_algo() waits silently for resources the cluster does not have. On an autoscaling cluster (a head with
no CPUs, GPU workers added on demand) we ask the autoscaler for the runners' bundles up front and wait with progress
output and a deadline, so a job either starts or fails with a message that says what is missing."""

from __future__ import annotations

import time
from typing import Callable

import ray


class ClusterCapacityError(RuntimeError):
    """The cluster did not grow to what the job asked for within the deadline."""


def runner_bundles(num_runners: int, gpus_per_runner: float | None) -> list[dict[str, float]]:
    """One bundle per env runner: a whole CPU (what the autoscaler plans nodes by) and its GPU share, if any."""
    bundle = {"CPU": 1.0, **({"GPU": float(gpus_per_runner)} if gpus_per_runner else {})}
    return [dict(bundle) for _ in range(num_runners)]


def _fits(have: dict[str, float], bundles: list[dict[str, float]]) -> bool:
    return all(have.get(k, 0.0) + 1e-9 >= sum(b.get(k, 0.0) for b in bundles) for k in ("CPU", "GPU"))


def _describe(res: dict[str, float]) -> str:
    return f"{res.get('CPU', 0.0):g} CPU, {res.get('GPU', 0.0):g} GPU"


def grow_cluster(bundles: list[dict[str, float]], timeout_s: float, poll_s: float = 1.0,
                 log: Callable[[str], None] = print) -> dict[str, float]:
    """Ask the autoscaler for `bundles` and wait until the cluster's totals hold them; returns cluster_resources().

    The request stays in force until release_request() (so nodes are not scaled down mid-job)."""
    from ray.autoscaler.sdk import request_resources

    need = {k: sum(b.get(k, 0.0) for b in bundles) for k in ("CPU", "GPU")}
    have = ray.cluster_resources()
    if _fits(have, bundles):
        return have
    request_resources(bundles=bundles)
    log(f"waiting for the autoscaler: the job needs {_describe(need)}, the cluster has {_describe(have)} "
        f"(deadline {timeout_s:g} s)")
    start = last_note = time.monotonic()
    while time.monotonic() - start < timeout_s:
        time.sleep(poll_s)
        have = ray.cluster_resources()
        if _fits(have, bundles):
            log(f"cluster ready after {time.monotonic() - start:.0f} s: {_describe(have)} "
                f"on {sum(1 for n in ray.nodes() if n['Alive'])} node(s)")
            return have
        if time.monotonic() - last_note >= 30:
            last_note = time.monotonic()
            log(f"  … still waiting ({time.monotonic() - start:.0f} s): cluster has {_describe(have)}")
    release_request()
    raise ClusterCapacityError(
        f"the cluster did not grow to {_describe(need)} within {timeout_s:g} s (it has {_describe(have)}). "
        "Check `ray status` (pending nodes, launch errors) and the worker types' max_workers, "
        "or ask for fewer env runners (--num-env-runners)")


def release_request() -> None:
    """Withdraw our standing autoscaler request so idle nodes can be removed after the job."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])


def _where_am_i(runner) -> dict:
    from esper.runtime.devices import actor_device, assigned_gpu_ids

    env = runner.env.unwrapped
    return {"node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in assigned_gpu_ids()],
            "device": str(actor_device()), "env": f"{type(env).__name__} × {runner.num_envs}"}


def runner_placement(algo) -> dict:
    """Where this job's env runners live (node, the GPU ids Ray gave them, the device their hosts train on, the env
    class and how many worlds it steps) and every alive node's resources; printed at start-up, kept in summary.json."""
    runners = algo.env_runner_group.foreach_env_runner(_where_am_i, local_env_runner=False)
    nodes = [{"node_id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]
    return {"runners": runners, "nodes": nodes}
