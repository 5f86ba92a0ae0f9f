"""Governor fault injection: do runs with an injected NaN or loss explosion recover without a crash?
(experiments/governor_faults.py runs it.)

Each run trains the world's host with a scheduled seed (so a live seed exists when the fault hits) and, at a random
epoch after the Governor has history, either writes NaN into a host weight (`nan`) or multiplies the classifier's
weights by `explode_scale` (`explosion`), once. A rollback returns the run to the last good epoch, which is trained
again. A run recovers when it finishes every epoch without an exception, the Governor rolled back at least once,
and the final weights and validation metric are finite.
"""

from __future__ import annotations

import logging
import math
import random

import torch

from esper.world import WorldConfig
from esper.study.bench import markdown_table
from esper.tamiyo import ScheduleTamiyo
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.run import run_training
from esper.tolaria.trainer import Trainer, pick_device

log = logging.getLogger(__name__)
KINDS = ("nan", "explosion")
MIN_EPOCHS = 5
"""The fault lands in epochs 3 … epochs − 2: after the Governor's 3 epochs of history, before the last."""


def _injector(kind: str, at_epoch: int, scale: float):
    fired = []

    def inject(trainer: Trainer) -> None:
        if trainer.epoch != at_epoch or fired:  # one fault: the retried epoch after a rollback runs clean
            return
        fired.append(at_epoch)
        with torch.no_grad():
            if kind == "nan":
                next(trainer.model.host.parameters()).view(-1)[0] = float("nan")
            else:
                trainer.model.host.head.weight.mul_(scale)
    return inject


def one_run(kind: str, seed: int, world: WorldConfig, task, explode_scale: float) -> dict:
    """One run with one fault of `kind` at a seed-chosen epoch: did it recover, and how."""
    epochs = world.trainer.epochs
    run = build_run(world, task, seed=seed, device=pick_device(world.device))
    events = []
    run.listen(events.append)
    at = random.Random(seed).randrange(3, epochs - 1)
    row = {"kind": kind, "seed": seed, "fault_epoch": at, "crashed": False, "error": ""}
    try:
        result = run_training(run, ScheduleTamiyo(1, "block3", "conv_light", 3),
                              before_epoch=_injector(kind, at, explode_scale))
        finite = all(bool(torch.isfinite(p).all()) for p in run.model.parameters())
        row.update(rollbacks=result.rollbacks, final_val_metric=result.val_metric, params_finite=finite,
                   epochs_trained=len(run.losses), reasons=[e.reason for e in events if e.kind == "rollback"])
        row["recovered"] = (result.rollbacks >= 1 and finite and math.isfinite(result.val_metric)
                            and run.trainer.epoch == epochs)
    except Exception as exc:  # a crash is exactly what this experiment counts
        row.update(crashed=True, error=f"{type(exc).__name__}: {exc}", recovered=False, rollbacks=run.governor.rollbacks)
    return row


def run_faults(world: WorldConfig, runs: int, explode_scale: float) -> list[dict]:
    """`runs` runs, alternating nan and explosion, seeds 0 … runs − 1, on one shared task."""
    task = build_world_task(world, pick_device(world.device))
    rows = []
    for i in range(runs):
        kind = KINDS[i % 2]
        row = one_run(kind, i, world, task, explode_scale)
        rows.append(row)
        log.info(f"run {i + 1:2d}/{runs} {kind:<9} fault@epoch {row['fault_epoch']}: "
                 f"{'recovered' if row['recovered'] else 'FAILED'} (rollbacks {row['rollbacks']}) {row.get('error', '')}")
    return rows


def table(rows: list[dict]) -> str:
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in KINDS}
    return markdown_table(["fault", "runs", "recovered", "crashed", "median rollbacks"], [
        [kind, str(len(rs)), f"{sum(r['recovered'] for r in rs)}/{len(rs)}", str(sum(r["crashed"] for r in rs)),
         str(sorted(r["rollbacks"] for r in rs)[len(rs) // 2])] for kind, rs in by_kind.items()])
