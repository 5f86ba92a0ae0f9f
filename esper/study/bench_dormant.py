"""Train-step cost of the Kasmina plane vs the bare host (what experiments/bench_dormant.py runs).

Arms (one shared host object, so identical weights; same batches; interleaved step by step in rotating order;
each repeat keeps its median step, and the table reports the median over repeats of arm / host):
  host      the bare CNN host (no plane)
  dormant   the plane with every slot DORMANT
  training  one seed (conv_light, middle slot) in TRAINING (isolation, straight-through)
  blending  the same seed in BLENDING at α = 0.5
"""

from __future__ import annotations

import logging
import statistics

import torch
from torch import nn

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.kasmina.config import KasminaConfig
from esper.kasmina.hosts import CNNHostConfig
from esper.study.bench import TimedArm, Timing, image_batches, markdown_table

log = logging.getLogger(__name__)
ARMS = ("host", "dormant", "training", "blending")


def arm_model(arm: str, host: nn.Module) -> nn.Module:
    """`host` bare, or inside the plane with the arm's seed state."""
    if arm == "host":
        return host
    model = MorphogeneticModel(host, KasminaConfig(gate_profile="permissive"))
    if arm in ("training", "blending"):
        model.germinate("block2", "conv_light", tempo=2, curve="linear")
        model.advance("block2")  # → TRAINING
        if arm == "blending":
            model.advance("block2")  # → BLENDING
            model.step_epoch()  # α = 0.5 (linear, tempo 2)
    return model


def bench_preset(preset: str, timing: Timing) -> dict:
    """Every arm on the `preset` host: median step times and the median per-repeat ratio to the bare host."""
    torch.manual_seed(timing.seed)
    host = CNNHost(CNNHostConfig(preset=preset))
    host_start = {k: v.clone() for k, v in host.state_dict().items()}
    batches = image_batches(timing)
    arms = {}
    for name in ARMS:  # every arm wraps the same host object: identical weights by construction
        host.load_state_dict(host_start)
        arms[name] = TimedArm(arm_model(name, host))
    for arm in arms.values():  # warm-up (allocator, kernels)
        arm.time("train", *batches[0])
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    for r in range(timing.repeats):
        step_times: dict[str, list[float]] = {a: [] for a in ARMS}
        for a in ARMS:
            arms[a].reset()
        for i, (x, y) in enumerate(batches):
            k = (r + i) % len(ARMS)  # interleave per step, rotating which arm goes first
            for a in ARMS[k:] + ARMS[:k]:
                step_times[a].append(arms[a].time("train", x, y))
        for a in ARMS:  # the median step of a repeat shrugs off steps hit by other processes
            times[a].append(statistics.median(step_times[a]))
        log.info(f"  [{preset}] repeat {r + 1}/{timing.repeats}: "
                 + "  ".join(f"{a} {times[a][-1] * 1e3:.2f}ms" for a in ARMS))
    return {
        "preset": preset,
        "host_params": sum(p.numel() for p in host.parameters()),
        "median_ms": {a: statistics.median(times[a]) * 1e3 for a in ARMS},
        "median_ratio_vs_host": {a: statistics.median(t / h for t, h in zip(times[a], times["host"])) for a in ARMS},
        "per_repeat_median_seconds": times,
    }


def table(results: list[dict]) -> str:
    return markdown_table(
        ["host preset", "host params", "host ms/step", "dormant / host", "training / host", "blending / host"],
        [[r["preset"], f"{r['host_params']:,}", f"{r['median_ms']['host']:.2f}"]
         + [f"{r['median_ratio_vs_host'][a]:.3f}" for a in ARMS[1:]] for r in results])
