"""A short, offline demo of the Kasmina plane (esper/study/demo_plane.py).

    python experiments/demo_plane.py                                  # tiny host, built-in synthetic task, ~1 min on CPU
    python experiments/demo_plane.py --set world.trainer.epochs=12 --set world.host.preset=small
    python experiments/demo_plane.py --set world.device=cuda:0 --out /tmp/grown_model.pt

Trains the CNN host of --preset's world (default demo: synthetic images, 8 epochs; ≥ 7 epochs show the whole
lifecycle) and walks one seed through its lifecycle on a fixed schedule — germinate → TRAINING (isolation) →
BLENDING (α ramps) → HOLDING → FOSSILIZED — printing a line per epoch, then saves the grown model with its
architecture manifest to --out and checks that it reloads exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

from esper.study.cli import WorldPreset, fail, load, script_parser, show_config, show_progress
from esper.study.demo_plane import SLOT, run_demo


def main() -> None:
    p = script_parser(__doc__, preset="demo", out="runs/demo/grown_model.pt", out_file=True)
    p.add_argument("--seed", type=int, default=0, help="host initialisation and data order")
    args = p.parse_args()
    cfg = load(p, args, WorldPreset)  # the world checked whole
    world = cfg.world
    if world.host.name != "cnn":
        fail(f"world.host.name: the demo grows a conv seed in {SLOT} of a CNN host, got {world.host.name!r}")
    show_config(args, cfg)
    show_progress()
    out = args.out or Path("runs/demo/grown_model.pt")
    same = run_demo(world, args.seed, out)
    print(f"saved {out} (manifest + weights); reloaded outputs identical: {same}")
    if not same:
        sys.exit("reloaded model differs from the trained one")


if __name__ == "__main__":
    main()
