"""A short, offline demo of the Kasmina plane (the README's run command until the PPO job lands).

    python experiments/demo_plane.py                 # tiny host, built-in synthetic task, ~1 min on CPU
    python experiments/demo_plane.py --epochs 12 --preset small

Trains a CNN host on the built-in synthetic task and walks one seed through its whole lifecycle on a fixed
schedule — germinate → TRAINING (isolation) → BLENDING (α ramps) → HOLDING → FOSSILIZED — printing a line
per epoch, then saves the grown model with its architecture manifest and checks that it reloads exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from esper.kasmina import MorphogeneticModel, read_manifest
from esper.kasmina.hosts import build_host
from esper.leyline import Stage
from esper.world import WorldConfig
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.trainer import pick_device

SLOT, BLUEPRINT = "block2", "conv_light"


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8, help="epochs (≥ 7 to see the whole lifecycle)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"], help="host width preset")
    p.add_argument("--n-images", type=int, default=6000, help="synthetic images (10%% become validation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda:0")
    p.add_argument("--out", type=Path, default=Path("runs/demo/grown_model.pt"))
    args = p.parse_args()
    if args.epochs < 1 or args.n_images < 20:
        p.error("--epochs must be ≥ 1 and --n-images ≥ 20")
    return args


def _act(model: MorphogeneticModel, epoch: int) -> str:
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


def main() -> None:
    args = _parse()
    device = pick_device(args.device)
    world = WorldConfig.model_validate({
        "name": "demo", "data": {"source": "synthetic", "limit": args.n_images, "val_fraction": 0.1},
        "host": {"preset": args.preset}, "trainer": {"epochs": args.epochs, "batch_size": 128}, "val_images": None})
    task = build_world_task(world, device)
    run = build_run(world, task, seed=args.seed, device=device)
    model = run.model
    print(f"demo: {args.preset} host ({model.param_counts().host:,} params) on {device}, "
          f"{len(task.bundle.train)} train / {len(task.bundle.val)} val synthetic images, {args.epochs} epochs")
    for epoch in range(args.epochs):
        with run.own_rng():  # the seed's initial weights come from the run's own stream
            action = _act(model, epoch)
        t0 = time.perf_counter()
        out = run.finish_epoch(run.trainer.train_epoch())
        s, pc = model.slot(SLOT), model.param_counts()
        print(f"epoch {epoch + 1:2d}/{args.epochs}  loss {out.train_loss:.3f}  val_acc {out.val_metric:6.2%}  "
              f"{SLOT}: {s.stage.name:<10} α={s.alpha:.2f}  params {pc.total:,} (+{pc.excess_ratio:.1%})  "
              f"[{action}]  {time.perf_counter() - t0:.1f}s", flush=True)
    model.save(args.out)
    rebuilt = MorphogeneticModel.load(args.out, build_host(read_manifest(args.out).host)).to(device)
    model.eval(), rebuilt.eval()
    x = task.val_batches[0][0]
    same = torch.equal(model(x), rebuilt(x))
    print(f"saved {args.out} (manifest + weights); reloaded outputs identical: {same}")
    if not same:
        sys.exit("reloaded model differs from the trained one")


if __name__ == "__main__":
    main()
