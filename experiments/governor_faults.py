"""Governor fault injection: do runs with an injected NaN or loss explosion recover without a crash?

    python experiments/governor_faults.py                  # 10 NaN + 10 explosion runs, synthetic task, ~3 min
    python experiments/governor_faults.py --runs 40 --out docs/data/governor_faults.json
    python experiments/governor_faults.py --set world.trainer.epochs=9 --set world.data.limit=3000

Each run trains the world of --preset (default governor_faults: the tiny host on synthetic images, 7 epochs) with
a scheduled seed and, at a random epoch after the Governor has history, writes NaN into a host weight (`nan`) or
multiplies the classifier's weights by --explode-scale (`explosion`), once. A run recovers when it finishes every
epoch without an exception, the Governor rolled back at least once, and the final weights and validation metric
are finite (esper/study/governor_faults.py). Exit code 1 if any run did not recover.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from esper.study.cli import WorldPreset, fail, load, script_parser, show_config, show_progress
from esper.study.governor_faults import MIN_EPOCHS, run_faults, table


def main() -> None:
    p = script_parser(__doc__, preset="governor_faults", out="docs/data/governor_faults.json", out_file=True)
    p.add_argument("--runs", type=int, default=20, help="total runs, split evenly between nan and explosion")
    p.add_argument("--explode-scale", type=float, default=1e3, help="factor on the classifier's weights (explosion)")
    args = p.parse_args()
    if args.runs < 2:
        p.error("--runs must be ≥ 2 (one of each fault)")
    cfg = load(p, args, WorldPreset)  # the world checked whole
    world = cfg.world
    if world.trainer.epochs < MIN_EPOCHS:
        fail(f"world.trainer.epochs must be ≥ {MIN_EPOCHS} (the Governor needs 3 epochs of history), "
             f"got {world.trainer.epochs}")
    show_config(args, cfg)
    show_progress()
    t0 = time.perf_counter()
    rows = run_faults(world, args.runs, args.explode_scale)
    print("\n" + table(rows))
    out = args.out or Path("docs/data/governor_faults.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "seconds": time.perf_counter() - t0,
                               "runs": rows}, indent=2))
    print(f"\nwrote {out}")
    if not all(r["recovered"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
