"""The Kasmina plane's demo (experiments/demo_plane.py): one seed walked through its whole lifecycle on a fixed
schedule — germinate → TRAINING (isolation) → BLENDING (α ramps) → HOLDING → FOSSILIZED — a line per epoch, then
the grown model saved with its architecture manifest and reloaded."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from esper.kasmina import MorphogeneticModel, read_manifest
from esper.kasmina.hosts import build_host
from esper.leyline import Stage
from esper.world import WorldConfig
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.trainer import pick_device

log = logging.getLogger(__name__)
SLOT, BLUEPRINT = "block2", "conv_light"


def act(model: MorphogeneticModel, epoch: int) -> str:
    """The fixed demo schedule: one command per epoch while the seed walks its lifecycle."""
    slot = model.slot(SLOT)
    if epoch == 1:
        model.germinate(SLOT, BLUEPRINT, tempo=2, curve="cosine")
        return f"germinate {BLUEPRINT} in {SLOT}"
    if slot.stage in (Stage.GERMINATED, Stage.TRAINING, Stage.HOLDING) or (slot.stage is Stage.BLENDING and slot.alpha >= 1):
        gate = slot.next_gate()
        if gate is not None and gate.passed:
            return f"advance {SLOT} → {model.advance(SLOT).name}"
    return "wait"


def run_demo(world: WorldConfig, seed: int, out: Path) -> bool:
    """Train `world` on the demo schedule, save the grown model to `out`; True if it reloads with identical outputs."""
    device = pick_device(world.device)
    task = build_world_task(world, device)
    run = build_run(world, task, seed=seed, device=device)
    model, epochs = run.model, world.trainer.epochs
    log.info(f"demo: {world.host.preset} host ({model.param_counts().host:,} params) on {device}, "
             f"{len(task.bundle.train)} train / {len(task.bundle.val)} val images, {epochs} epochs")
    for epoch in range(epochs):
        with run.own_rng():  # the seed's initial weights come from the run's own stream
            action = act(model, epoch)
        t0 = time.perf_counter()
        result = run.finish_epoch(run.trainer.train_epoch())
        s, pc = model.slot(SLOT), model.param_counts()
        log.info(f"epoch {epoch + 1:2d}/{epochs}  loss {result.train_loss:.3f}  val_acc {result.val_metric:6.2%}  "
                 f"{SLOT}: {s.stage.name:<10} α={s.alpha:.2f}  params {pc.total:,} (+{pc.excess_ratio:.1%})  "
                 f"[{action}]  {time.perf_counter() - t0:.1f}s")
    model.save(out)
    rebuilt = MorphogeneticModel.load(out, build_host(read_manifest(out).host)).to(device)
    model.eval(), rebuilt.eval()
    x = task.val_batches[0][0]
    return torch.equal(model(x), rebuilt(x))
