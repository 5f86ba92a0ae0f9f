"""Benchmark: dormant overhead of `esper.wrap` on an unmodified torchvision ResNet-18 (CPU).

    python experiments/bench_wrap.py                          # 9 repeats, writes docs/data/bench_wrap.json
    python experiments/bench_wrap.py --repeats 5 --out /tmp/bench_wrap.json

Arms, in one process, with identical weights (the wrapped model wraps a deep copy of the bare one) and the same
batches, interleaved step by step in rotating order:
  bare      resnet18(num_classes=10) as torchvision builds it
  wrapped   esper.wrap(...) of the same model with an empty (DORMANT) slot at each of --points
Each is timed on a no-grad eval forward and on a train step (forward + backward + SGD); each repeat keeps its
median step, and the table reports the median over repeats of the times and of wrapped / bare.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

import esper
from esper.study.bench import parse_bench_args, write_bench_json

ARMS = ("bare", "wrapped")
MODES = ("forward", "train")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", nargs="+", default=["layer1", "layer2", "layer3", "layer4"])
    # BatchNorm in train mode needs two samples per batch
    return parse_bench_args(p, batch_size=32, steps=10, repeats=9, out_flag="--out", out=Path("docs/data/bench_wrap.json"),
                            min_batch=2)


class _Arm:
    """One arm's model and optimiser; `time(mode, x, y)` runs and times one step."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def time(self, mode: str, x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        if mode == "forward":
            self.model.eval()
            with torch.no_grad():
                self.model(x)
        else:
            self.model.train()
            self.opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(self.model(x), y).backward()
            self.opt.step()
        return time.perf_counter() - t0


def bench(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    bare = resnet18(num_classes=10)
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (args.batch_size,), generator=gen))
               for _ in range(args.steps)]
    wrapped = esper.wrap(copy.deepcopy(bare), args.points, example_input=batches[0][0][:2])
    assert all(s.seed is None for s in wrapped.slots.values())  # every slot DORMANT
    arms = {"bare": _Arm(bare), "wrapped": _Arm(wrapped)}
    for arm in arms.values():  # warm-up (allocator, kernels)
        for mode in MODES:
            arm.time(mode, *batches[0])
    times = {m: {a: [] for a in ARMS} for m in MODES}  # per-repeat median seconds
    for r in range(args.repeats):
        for mode in MODES:
            step_times: dict[str, list[float]] = {a: [] for a in ARMS}
            for i, (x, y) in enumerate(batches):
                for a in (ARMS if (r + i) % 2 == 0 else ARMS[::-1]):  # rotate which arm goes first
                    step_times[a].append(arms[a].time(mode, x, y))
            for a in ARMS:  # the median step of a repeat shrugs off steps hit by other processes
                times[mode][a].append(statistics.median(step_times[a]))
        print(f"  repeat {r + 1}/{args.repeats}: " + "  ".join(
            f"{m} bare {times[m]['bare'][-1] * 1e3:.1f}ms wrapped {times[m]['wrapped'][-1] * 1e3:.1f}ms" for m in MODES), flush=True)
    return {
        mode: {
            "median_ms": {a: statistics.median(times[mode][a]) * 1e3 for a in ARMS},
            "median_ratio_wrapped_vs_bare": statistics.median(w / b for w, b in zip(times[mode]["wrapped"], times[mode]["bare"])),
            "per_repeat_median_seconds": times[mode],
        }
        for mode in MODES
    }


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    print(f"benchmarking resnet18 bare vs esper.wrap at {args.points}: batch {args.batch_size}×3×32×32, "
          f"{args.steps} steps × {args.repeats} repeats, {args.threads} thread(s)", flush=True)
    results = bench(args)
    print("\n| step | bare ms | wrapped (dormant) ms | wrapped / bare |")
    print("|---|---:|---:|---:|")
    for mode, r in results.items():
        print(f"| {mode} | {r['median_ms']['bare']:.2f} | {r['median_ms']['wrapped']:.2f} | {r['median_ratio_wrapped_vs_bare']:.3f} |")
    write_bench_json(args.out, args, results)


if __name__ == "__main__":
    main()
