"""Benchmark: dormant overhead of `esper.wrap` on an unmodified torchvision ResNet-18 (CPU; esper/study/bench_wrap.py).

    python experiments/bench_wrap.py                          # 9 repeats, writes docs/data/bench_wrap.json
    python experiments/bench_wrap.py --repeats 5 --out /tmp/bench_wrap.json

Arms, with identical weights and the same batches, interleaved step by step: bare (resnet18 as torchvision builds
it) and wrapped (esper.wrap of a copy with an empty, DORMANT slot at each of --points), each timed on a no-grad eval
forward and on a train step. The table reports the median over repeats of the times and of wrapped / bare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from esper.study.bench import Timing, parse_bench_args, write_bench_json
from esper.study.bench_wrap import bench, models, table
from esper.study.cli import checked, show_progress


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", nargs="+", default=["layer1", "layer2", "layer3", "layer4"],
                   help="resnet18 submodules that get a slot")
    # BatchNorm in train mode needs two samples per batch
    args = parse_bench_args(p, batch_size=32, steps=10, repeats=9, out=Path("docs/data/bench_wrap.json"), min_batch=2)
    torch.set_num_threads(args.threads)
    arms = checked(lambda: models(args.points, Timing.of(args)), ValueError)  # a bad --points: one line
    show_progress()
    print(f"benchmarking resnet18 bare vs esper.wrap at {args.points}: batch {args.batch_size}×3×32×32, "
          f"{args.steps} steps × {args.repeats} repeats, {args.threads} thread(s)", flush=True)
    results = bench(arms, Timing.of(args))
    print("\n" + table(results))
    write_bench_json(args.out, args, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
