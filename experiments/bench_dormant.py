"""Benchmark: train-step cost of the Kasmina plane vs the bare host.

    python experiments/bench_dormant.py                     # paper + tiny hosts, 7 repeats
    python experiments/bench_dormant.py --presets paper --repeats 9 --json docs/data/bench_dormant.json

Arms (one shared host object, so identical weights; same batches; interleaved step by step in rotating
order; each repeat keeps its median step, and the table reports the median over repeats of arm / host):
  host      the bare CNN host (no plane)
  dormant   the plane with every slot DORMANT
  training  one seed (conv_light, middle slot) in TRAINING (isolation, straight-through)
  blending  the same seed in BLENDING at α = 0.5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.kasmina.config import KasminaConfig
from esper.kasmina.hosts import CNNHostConfig
from esper.study.bench import parse_bench_args, write_bench_json

ARMS = ("host", "dormant", "training", "blending")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["paper", "tiny"], choices=["tiny", "small", "paper"])
    return parse_bench_args(p, batch_size=128, steps=15, repeats=7, out_flag="--json", out=Path("docs/data/bench_dormant.json"))


def _arm_model(arm: str, host: nn.Module) -> nn.Module:
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


class _Arm:
    """One arm's model, optimiser and starting state."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.train()
        self.start = {k: v.clone() for k, v in model.state_dict().items()}
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def reset(self) -> None:
        self.model.load_state_dict(self.start)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(x), y).backward()
        self.opt.step()
        return time.perf_counter() - t0


def bench_preset(preset: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    host = CNNHost(CNNHostConfig(preset=preset))
    host_start = {k: v.clone() for k, v in host.state_dict().items()}
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (args.batch_size,), generator=gen))
               for _ in range(args.steps)]
    arms = {}
    for name in ARMS:  # every arm wraps the same host object: identical weights by construction
        host.load_state_dict(host_start)
        arms[name] = _Arm(_arm_model(name, host))
    for arm in arms.values():  # warm-up (allocator, kernels)
        arm.step(*batches[0])
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    for r in range(args.repeats):
        step_times: dict[str, list[float]] = {a: [] for a in ARMS}
        for a in ARMS:
            arms[a].reset()
        for i, (x, y) in enumerate(batches):
            k = (r + i) % len(ARMS)  # interleave per step, rotating which arm goes first
            for a in ARMS[k:] + ARMS[:k]:
                step_times[a].append(arms[a].step(x, y))
        for a in ARMS:  # the median step of a repeat shrugs off steps hit by other processes
            times[a].append(statistics.median(step_times[a]))
        print(f"  [{preset}] repeat {r + 1}/{args.repeats}: " + "  ".join(f"{a} {times[a][-1] * 1e3:.2f}ms" for a in ARMS), flush=True)
    ratios = {a: statistics.median(t / h for t, h in zip(times[a], times["host"])) for a in ARMS}
    return {
        "preset": preset,
        "host_params": sum(p.numel() for p in host.parameters()),
        "median_ms": {a: statistics.median(times[a]) * 1e3 for a in ARMS},
        "median_ratio_vs_host": ratios,
        "per_repeat_median_seconds": times,
    }


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    results = []
    for preset in args.presets:
        print(f"benchmarking preset {preset!r}: batch {args.batch_size}, {args.steps} steps × {args.repeats} repeats", flush=True)
        results.append(bench_preset(preset, args))
    print("\n| host preset | host params | host ms/step | dormant / host | training / host | blending / host |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        q = r["median_ratio_vs_host"]
        print(f"| {r['preset']} | {r['host_params']:,} | {r['median_ms']['host']:.2f} | {q['dormant']:.3f} | {q['training']:.3f} | {q['blending']:.3f} |")
    write_bench_json(args.json, args, results)


if __name__ == "__main__":
    main()
