"""Benchmark: train-step cost of the Kasmina plane vs the bare host (esper/study/bench_dormant.py has the arms).

    python experiments/bench_dormant.py                     # paper + tiny hosts, 7 repeats
    python experiments/bench_dormant.py --presets paper --repeats 9 --out docs/data/bench_dormant.json

Arms, on one shared host object (identical weights) and the same batches, interleaved step by step: host (the
bare CNN host), dormant (the plane, every slot DORMANT), training (one conv_light seed in TRAINING), blending (the
same seed at α = 0.5). The table reports the median over repeats of arm / host. Writes the JSON to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from esper.study.bench import Timing, parse_bench_args, write_bench_json
from esper.study.bench_dormant import bench_preset, table
from esper.study.cli import show_progress


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["paper", "tiny"], choices=["tiny", "small", "paper"],
                   help="CNN host presets to measure")
    args = parse_bench_args(p, batch_size=128, steps=15, repeats=7, out=Path("docs/data/bench_dormant.json"))
    torch.set_num_threads(args.threads)
    show_progress()
    timing, results = Timing.of(args), []
    for preset in args.presets:
        print(f"benchmarking preset {preset!r}: batch {args.batch_size}, {args.steps} steps × {args.repeats} repeats",
              flush=True)
        results.append(bench_preset(preset, timing))
    print("\n" + table(results))
    write_bench_json(args.out, args, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
