"""Benchmark: fused counterfactual evaluation vs one evaluation pass vs K separate passes.

    python experiments/bench_counterfactual.py                       # tiny/small/paper hosts, 7 repeats
    python experiments/bench_counterfactual.py --presets paper --repeats 9

K = 1 + number of contributing seeds (as-is + one configuration per seed with its α forced to 0). For each
host preset and each placement of seeds, times over the same validation batches, interleaved, medians of
per-repeat ratios:
  one       one ordinary evaluation pass (as-is only)
  fused     all K configurations in one fused pass (esper.tolaria.counterfactual.fused_outputs)
  separate  K ordinary passes, one per configuration
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.kasmina.hosts import CNNHostConfig
from esper.tolaria.counterfactual import contributing_slots, fused_outputs

PLACEMENTS = {"block3": ["block3"], "block2+block3": ["block2", "block3"], "all three": ["block1", "block2", "block3"]}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"], choices=["tiny", "small", "paper"])
    p.add_argument("--images", type=int, default=2048, help="validation images per pass")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--blueprint", default="conv_light")
    p.add_argument("--json", type=Path, default=Path("docs/data/bench_counterfactual.json"))
    args = p.parse_args()
    if args.repeats < 5:
        p.error("--repeats must be ≥ 5")
    return args


def _model(preset: str, slots: list[str], blueprint: str) -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(CNNHostConfig(preset=preset)))
    for s in slots:  # seeds in HOLDING (α = 1) with non-zero weights
        model.germinate(s, blueprint, tempo=1, curve="linear")
        model.advance(s), model.advance(s)
        model.slot(s).step_epoch()
        model.advance(s)
        for p in model.slot(s).seed.parameters():
            p.data.normal_(0, 0.05)
    return model.eval()


@torch.no_grad()
def _timed(fn, batches) -> float:
    t0 = time.perf_counter()
    for x in batches:
        fn(x)
    return time.perf_counter() - t0


def _separate(model: MorphogeneticModel, slots: list[str]):
    def run(x):
        model(x)
        for s in slots:
            model.slot(s).alpha_override = 0.0
            model(x)
            model.slot(s).alpha_override = None
    return run


def bench(preset: str, placement: str, args, batches) -> dict:
    model = _model(preset, PLACEMENTS[placement], args.blueprint)
    slots = contributing_slots(model)
    arms = {"one": model, "fused": lambda x: fused_outputs(model, x, slots), "separate": _separate(model, slots)}
    _timed(arms["fused"], batches[:1])
    times = {a: [] for a in arms}
    for r in range(args.repeats):
        names = list(arms)[r % 3:] + list(arms)[: r % 3]
        for a in names:
            times[a].append(_timed(arms[a], batches))
    ratio = lambda a: statistics.median(t / o for t, o in zip(times[a], times["one"]))
    row = {"preset": preset, "placement": placement, "K": 1 + len(slots), "one_ms": statistics.median(times["one"]) * 1e3,
           "fused_over_one": ratio("fused"), "separate_over_one": ratio("separate")}
    print(f"  {preset:<5} {placement:<14} K={row['K']}: one {row['one_ms']:.0f} ms, fused/one {row['fused_over_one']:.2f}, "
          f"separate/one {row['separate_over_one']:.2f}", flush=True)
    return row


def main() -> None:
    args = _parse()
    gen = torch.Generator().manual_seed(0)
    batches = list(torch.randn(args.images, 3, 32, 32, generator=gen).split(args.batch_size))
    rows = [bench(p, pl, args, batches) for p in args.presets for pl in PLACEMENTS]
    print("\n| host | seeds in | K | one pass ms | fused / one | separate / one | fused speed-up vs separate |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['placement']} | {r['K']} | {r['one_ms']:.0f} | {r['fused_over_one']:.2f} | "
              f"{r['separate_over_one']:.2f} | {r['separate_over_one'] / r['fused_over_one']:.2f}× |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "torch": torch.__version__,
                                     "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
