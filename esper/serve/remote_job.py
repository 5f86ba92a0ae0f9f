"""A training job steered by a served Tamiyo over HTTP, outside the Serve process (what
experiments/remote_training.py runs), and the same job in-process to check that both make the same run.

The job trains a world's host with Tolaria; before each epoch it sends the observation (features + mask) to
POST /v1/decide and applies the answer. When the server is down, slow or refuses, that epoch falls back to a local
controller (WAIT or the heuristic), the failure is logged, and the next epoch asks the server again: a server
problem never crashes the job.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def train(world, controller, seed: int):
    """One Run of `world` steered by `controller` (the same code for remote and in-process; the same Run, and so
    the same observations, as the RL env's episodes)."""
    from esper.tolaria.builder import build_run, build_world_task
    from esper.tolaria.run import run_training
    from esper.tolaria.trainer import pick_device

    device = pick_device(world.device)
    run = build_run(world, build_world_task(world, device), seed=seed, device=device,
                    capacity_price=world.reward.rent_lambda)  # the price a served agent was trained to read
    return run_training(run, controller)


def remote_controller(url: str, token: str | None, timeout_s: float, retries: int, fallback: str):
    """A RemoteTamiyo asking `url`, falling back to `fallback` ("wait" or "heuristic") when the server fails."""
    from esper.serve.client import RemoteTamiyo, TamiyoClient
    from esper.tamiyo import HeuristicTamiyo, WaitTamiyo

    client = TamiyoClient(url, token=token, timeout_s=timeout_s, retries=retries)
    return RemoteTamiyo(client, fallback=HeuristicTamiyo() if fallback == "heuristic" else WaitTamiyo())


def run_remote(world, remote, seed: int) -> tuple[object, dict]:
    """The job with `remote` deciding; its Run result and the summary the script writes."""
    log.info(f"training world {world.name!r} (seed {seed}), asking {remote.client.url} every epoch")
    result = train(world, remote, seed)
    log.info(f"remote: val {result.metric_name} {result.val_metric:.4f}, params {result.params_total:,}; "
             f"{remote.answered}/{remote.asked} decisions from the server, {remote.fallbacks} fallbacks")
    return result, {"metric": result.metric_name, "val_metric": result.val_metric, "params_total": result.params_total,
                    "decisions": result.decisions, "asked": remote.asked, "answered": remote.answered,
                    "fallbacks": remote.fallbacks}


def same_run(agent, world, seed: int, remote_result) -> dict:
    """The job in-process with `agent` (an Agent); its metric, and whether it made the remote run's decisions."""
    from esper.tamiyo.neural import NeuralTamiyo

    local = train(world, NeuralTamiyo(agent), seed)
    ops = lambda r: [d.split(" (")[0] for d in r.decisions]  # "epoch: OP"; the reasons differ by design
    # Same ops every epoch, same parameter count and the same validation metric after every epoch: the runs
    # made the same decisions (a different slot, blueprint or blend would change the metric or the size).
    equal = (ops(local) == ops(remote_result) and local.params_total == remote_result.params_total
             and local.metric_history == remote_result.metric_history)
    log.info(f"in-process: val {local.metric_name} {local.val_metric:.4f} — "
             f"{'identical run' if equal else 'DIFFERENT from the remote run'}")
    return {"val_metric": local.val_metric, "equal": equal}


def write_summary(path: Path, summary: dict) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
