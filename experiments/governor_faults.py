"""Governor fault injection: do runs with an injected NaN or loss explosion recover without a crash?

    python experiments/governor_faults.py                  # 10 NaN + 10 explosion runs, synthetic task, ~3 min
    python experiments/governor_faults.py --runs 40 --json docs/data/governor_faults.json

Each run trains the tiny host with a scheduled seed (so a live seed exists when the fault hits) and, at a
random epoch after the Governor has history, either writes NaN into a host weight (`nan`) or multiplies the
classifier's weights by --explode-scale (`explosion`), once. A rollback returns the run to the last good epoch,
which is trained again. A run recovers when it finishes every epoch without an exception, the Governor rolled
back at least once, and the final weights and validation metric are finite.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from esper.world import WorldConfig
from esper.tamiyo import ScheduleTamiyo
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.run import run_training
from esper.tolaria.trainer import Trainer


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="total runs, split evenly between nan and explosion")
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--images", type=int, default=1500)
    p.add_argument("--explode-scale", type=float, default=1e3)
    p.add_argument("--json", type=Path, default=Path("docs/data/governor_faults.json"))
    args = p.parse_args()
    if args.runs < 2 or args.epochs < 5:
        p.error("--runs must be ≥ 2 and --epochs ≥ 5 (the Governor needs 3 epochs of history)")
    return args


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


def _world(args) -> WorldConfig:
    return WorldConfig.model_validate({
        "name": "governor_faults", "data": {"source": "synthetic", "limit": args.images, "val_fraction": 0.2},
        "host": {"preset": "tiny"}, "trainer": {"epochs": args.epochs, "batch_size": 64}, "val_images": None})


def one_run(kind: str, seed: int, args, world: WorldConfig, task) -> dict:
    run = build_run(world, task, seed=seed, device=torch.device("cpu"))
    events = []
    run.listen(events.append)
    at = random.Random(seed).randrange(3, args.epochs - 1)
    row = {"kind": kind, "seed": seed, "fault_epoch": at, "crashed": False, "error": ""}
    try:
        result = run_training(run, ScheduleTamiyo(1, "block3", "conv_light", 3),
                              before_epoch=_injector(kind, at, args.explode_scale))
        finite = all(bool(torch.isfinite(p).all()) for p in run.model.parameters())
        row.update(rollbacks=result.rollbacks, final_val_metric=result.val_metric, params_finite=finite,
                   epochs_trained=len(run.losses), reasons=[e.reason for e in events if e.kind == "rollback"])
        row["recovered"] = (result.rollbacks >= 1 and finite and math.isfinite(result.val_metric)
                            and run.trainer.epoch == args.epochs)
    except Exception as exc:  # a crash is exactly what this experiment counts
        row.update(crashed=True, error=f"{type(exc).__name__}: {exc}", recovered=False, rollbacks=run.governor.rollbacks)
    return row


def main() -> None:
    args = _parse()
    world = _world(args)
    task = build_world_task(world, torch.device("cpu"))
    rows, t0 = [], time.perf_counter()
    for i in range(args.runs):
        kind = ("nan", "explosion")[i % 2]
        row = one_run(kind, seed=i, args=args, world=world, task=task)
        rows.append(row)
        print(f"run {i + 1:2d}/{args.runs} {kind:<9} fault@epoch {row['fault_epoch']}: "
              f"{'recovered' if row['recovered'] else 'FAILED'} (rollbacks {row['rollbacks']}) {row.get('error', '')}", flush=True)
    print("\n| fault | runs | recovered | crashed | median rollbacks |\n|---|---:|---:|---:|---:|")
    for kind in ("nan", "explosion"):
        rs = [r for r in rows if r["kind"] == kind]
        rb = sorted(r["rollbacks"] for r in rs)[len(rs) // 2]
        print(f"| {kind} | {len(rs)} | {sum(r['recovered'] for r in rs)}/{len(rs)} | {sum(r['crashed'] for r in rs)} | {rb} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "seconds": time.perf_counter() - t0, "runs": rows}, indent=2))
    print(f"\nwrote {args.json}")
    if not all(r["recovered"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
