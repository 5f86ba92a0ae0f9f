"""Benchmark: fused counterfactual evaluation vs one evaluation pass vs K separate passes
(esper/study/bench_counterfactual.py has the arms).

    python experiments/bench_counterfactual.py                       # tiny/small/paper hosts, 7 repeats
    python experiments/bench_counterfactual.py --presets paper --repeats 9 --out /tmp/bench_counterfactual.json

K = 1 + number of contributing seeds. For each host preset and each placement of seeds (block3, block2+block3, all
three), times over the same validation batches, interleaved, medians of per-repeat ratios: one (one ordinary
evaluation pass), fused (all K configurations in one fused pass), separate (K ordinary passes). Writes --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from esper.kasmina import BLUEPRINTS
from esper.study.bench_counterfactual import PLACEMENTS, bench, table, validation_batches
from esper.study.cli import show_progress


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"], choices=["tiny", "small", "paper"])
    p.add_argument("--images", type=int, default=2048, help="validation images per pass")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--blueprint", default="conv_light",
                   choices=sorted(n for n, bp in BLUEPRINTS.items() if bp.kind == "conv2d"))
    p.add_argument("--out", type=Path, default=Path("docs/data/bench_counterfactual.json"), metavar="PATH",
                   help="where the JSON results go (default %(default)s)")
    args = p.parse_args()
    if args.repeats < 5 or args.images < 1 or args.batch_size < 1:
        p.error("--repeats must be ≥ 5, --images and --batch-size ≥ 1")
    show_progress()
    batches = validation_batches(args.images, args.batch_size)
    rows = [bench(pr, pl, args.blueprint, args.repeats, batches) for pr in args.presets for pl in PLACEMENTS]
    print("\n" + table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "torch": torch.__version__,
                                    "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
