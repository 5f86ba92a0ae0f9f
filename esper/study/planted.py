"""The planted audit: does Emrakul cull a useless fossil and keep an essential one? (experiments/emrakul_planted.py)

Each run trains the world's host from epoch 0 with two fossils planted in it (the capacity control's way: FOSSILIZED
before the first batch):
  essential  a `conv_heavy` seed in the last, narrowest block, trained jointly with the host — the host block under
             it is too narrow to carry the task alone, so taking it away costs accuracy the host cannot win back
  useless    a `conv_light` seed in the first block whose output layer is frozen at its zero initialisation: it
             runs, costs its FLOPs and parameters, and adds exactly nothing (its paired churn is exactly 0)
Emrakul (the world's `emrakul:` section, one audit at a time) audits both. A run passes when the useless fossil is
culled and the essential one is FOSSILIZED at the end (kept, or revived after its audit).
"""

from __future__ import annotations

import logging
from pathlib import Path

from esper.kasmina import MorphogeneticModel
from esper.leyline import Stage
from esper.study.bench import markdown_table
from esper.world import WorldConfig
from esper.tamiyo import WaitTamiyo
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.run import run_training
from esper.tolaria.trainer import pick_device

log = logging.getLogger(__name__)
ESSENTIAL, USELESS = ("conv_heavy", -1), ("conv_light", 0)
"""(blueprint, slot index): the essential seed in the last slot, the useless one in the first."""


def plant(model: MorphogeneticModel) -> tuple[str, str]:
    """Fossilize both seeds at epoch 0 (weights from the run's seed); freeze the useless one's zero output layer.
    Returns (essential slot, useless slot)."""
    slots = model.action_spec.slots
    names = {}
    manifest = model.manifest()
    for role, (blueprint, index) in (("essential", ESSENTIAL), ("useless", USELESS)):
        m = next(s for s in manifest.slots if s.name == slots[index])
        m.stage, m.blueprint, m.tempo, m.curve, m.alpha = Stage.FOSSILIZED.name, blueprint, 3, "linear", 1.0
        names[role] = slots[index]
    model.load_manifest(manifest)
    output_layer = list(model.slot(names["useless"]).seed.children())[-1]
    assert not any(p.any() for p in output_layer.parameters()), "the blueprint's output layer is zero-initialised"
    for p in output_layer.parameters():
        p.requires_grad_(False)  # never trained: the branch stays exactly zero
    return names["essential"], names["useless"]


def one_run(world: WorldConfig, task, seed: int, telemetry: Path | None = None) -> dict:
    """One planted run (its telemetry to `telemetry`/seedN.parquet when given, for plot_run.py)."""
    from esper.nissa import ParquetBackend, TelemetryHub

    slots: dict[str, str] = {}
    run = build_run(world, task, seed=seed, device=pick_device(world.device),
                    prepare=lambda model: slots.update(zip(("essential", "useless"), plant(model))),
                    capacity_price=world.reward.rent_lambda)
    hub = TelemetryHub([ParquetBackend(telemetry / f"seed{seed}.parquet")], arm="planted", seed=seed) if telemetry else None
    if hub is not None:
        run.listen(hub)
    result = run_training(run, WaitTamiyo())
    if hub is not None:
        hub.close()
    stage = {role: run.model.slot(name).stage for role, name in slots.items()}
    audits = [d.split(": ", 1)[1] for d in result.decisions if "emrakul" in d]
    passed = stage["useless"] is not Stage.FOSSILIZED and stage["essential"] is Stage.FOSSILIZED
    log.info("seed %d: essential %s, useless %s, val %.4f — %s", seed, stage["essential"].name,
             stage["useless"].name, result.val_metric, "; ".join(audits))
    return {"seed": seed, "passed": passed, "essential": stage["essential"].name, "useless": stage["useless"].name,
            "val_metric": result.val_metric, "culled": result.culled_fossils, "revived": result.revived_fossils,
            "audits": "; ".join(audits), "audit_flops_share": result.audit_flops / result.train_flops}


def run_planted(world: WorldConfig, seeds: list[int], telemetry: Path | None = None) -> list[dict]:
    """Every seed's planted run (Emrakul switched on whatever the preset says)."""
    world = world.model_copy(update={"emrakul": world.emrakul.model_copy(update={"enabled": True})})
    task = build_world_task(world, pick_device(world.device))
    return [one_run(world, task, seed, telemetry) for seed in seeds]


def table(rows: list[dict]) -> str:
    body = [[str(r["seed"]), "yes" if r["passed"] else "**no**", r["essential"], r["useless"],
             f"{r['val_metric']:.4f}", r["audits"]] for r in rows]
    return markdown_table(["seed", "passed", "essential at the end", "useless at the end", "val metric",
                           "Emrakul's decisions"], body, left=4)
