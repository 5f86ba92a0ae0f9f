"""Fused counterfactual evaluation vs one evaluation pass vs K separate passes (experiments/bench_counterfactual.py).

K = 1 + number of contributing seeds (as-is + one configuration per seed with its α forced to 0). For each host
preset and each placement of seeds, times over the same validation batches, interleaved, medians of per-repeat
ratios:
  one       one ordinary evaluation pass (as-is only)
  fused     all K configurations in one fused pass (esper.tolaria.counterfactual.fused_outputs)
  separate  K ordinary passes, one per configuration
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.kasmina.hosts import CNNHostConfig
from esper.study.bench import markdown_table
from esper.tolaria.counterfactual import contributing_slots, fused_outputs

log = logging.getLogger(__name__)
PLACEMENTS = {"block3": ["block3"], "block2+block3": ["block2", "block3"], "all three": ["block1", "block2", "block3"]}


def model_with_seeds(preset: str, slots: list[str], blueprint: str) -> MorphogeneticModel:
    """The `preset` CNN host with a `blueprint` seed in HOLDING (α = 1, non-zero weights) at each of `slots`."""
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(CNNHostConfig(preset=preset)))
    for s in slots:
        model.germinate(s, blueprint, tempo=1, curve="linear")
        model.advance(s), model.advance(s)
        model.slot(s).step_epoch()
        model.advance(s)
        for p in model.slot(s).seed.parameters():
            p.data.normal_(0, 0.05)
    return model.eval()


def validation_batches(images: int, batch_size: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return list(torch.randn(images, 3, 32, 32, generator=gen).split(batch_size))


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


def bench(preset: str, placement: str, blueprint: str, repeats: int, batches: list[torch.Tensor]) -> dict:
    """One host × placement: K, one pass's median ms, and fused / one and separate / one (medians of ratios)."""
    model = model_with_seeds(preset, PLACEMENTS[placement], blueprint)
    slots = contributing_slots(model)
    arms = {"one": model, "fused": lambda x: fused_outputs(model, x, slots), "separate": _separate(model, slots)}
    _timed(arms["fused"], batches[:1])
    times = {a: [] for a in arms}
    for r in range(repeats):
        for a in list(arms)[r % 3:] + list(arms)[: r % 3]:
            times[a].append(_timed(arms[a], batches))
    ratio = lambda a: statistics.median(t / o for t, o in zip(times[a], times["one"]))
    row = {"preset": preset, "placement": placement, "K": 1 + len(slots), "one_ms": statistics.median(times["one"]) * 1e3,
           "fused_over_one": ratio("fused"), "separate_over_one": ratio("separate")}
    log.info(f"  {preset:<5} {placement:<14} K={row['K']}: one {row['one_ms']:.0f} ms, fused/one "
             f"{row['fused_over_one']:.2f}, separate/one {row['separate_over_one']:.2f}")
    return row


def table(rows: list[dict]) -> str:
    return markdown_table(
        ["host", "seeds in", "K", "one pass ms", "fused / one", "separate / one", "fused speed-up vs separate"],
        [[r["preset"], r["placement"], str(r["K"]), f"{r['one_ms']:.0f}", f"{r['fused_over_one']:.2f}",
          f"{r['separate_over_one']:.2f}", f"{r['separate_over_one'] / r['fused_over_one']:.2f}×"] for r in rows], left=2)
