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
from esper.kasmina.hosts import CNNHost, build_host
from esper.leyline import HostConfig, KasminaConfig, Stage
from esper.tolaria.data import load_synthetic, split_train_val
from esper.tolaria.datasets import channel_stats
from esper.tolaria.trainer import Trainer, TrainerConfig, pick_device

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
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    data = load_synthetic(args.n_images, seed=args.seed).to(device)
    train, val = split_train_val(data, 0.1, seed=args.seed)
    model = MorphogeneticModel(CNNHost(HostConfig(preset=args.preset)), KasminaConfig()).to(device)
    mean, std = channel_stats(train)
    trainer = Trainer(model, train, val, TrainerConfig(epochs=args.epochs, batch_size=128), mean, std, seed=args.seed)
    print(f"demo: {args.preset} host ({model.param_counts().host:,} params) on {device}, "
          f"{len(train)} train / {len(val)} val synthetic images, {args.epochs} epochs")
    for epoch in range(args.epochs):
        action = _act(model, epoch)
        t0 = time.perf_counter()
        loss = trainer.train_epoch()
        val_loss, val_acc = trainer.evaluate()
        model.step_epoch()
        s, pc = model.slot(SLOT), model.param_counts()
        print(f"epoch {epoch + 1:2d}/{args.epochs}  loss {loss:.3f}  val_acc {val_acc:6.2%}  "
              f"{SLOT}: {s.stage.name:<10} α={s.alpha:.2f}  params {pc.total:,} (+{pc.excess_ratio:.1%})  "
              f"[{action}]  {time.perf_counter() - t0:.1f}s", flush=True)
    model.save(args.out)
    rebuilt = MorphogeneticModel.load(args.out, build_host(read_manifest(args.out).host)).to(device)
    model.eval(), rebuilt.eval()
    x = next(iter(trainer.val_loader))[0]
    same = torch.equal(model(x), rebuilt(x))
    print(f"saved {args.out} (manifest + weights); reloaded outputs identical: {same}")
    if not same:
        sys.exit("reloaded model differs from the trained one")


if __name__ == "__main__":
    main()
