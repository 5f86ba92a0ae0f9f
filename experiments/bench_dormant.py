"""Benchmark: train-step cost of the Kasmina plane vs the bare host.

    python experiments/bench_dormant.py                     # paper + tiny hosts, 7 repeats
    python experiments/bench_dormant.py --presets paper --repeats 9 --json docs/data/bench_dormant.json

Arms (same weights, same batches, interleaved in rotating order within each repeat):
  host      the bare CNN host (no plane)
  dormant   the plane with every slot DORMANT
  training  one seed (conv_light, middle slot) in TRAINING (isolation, straight-through)
  blending  the same seed in BLENDING at α = 0.5
Reports medians over repeats of (a) ms per train step and (b) the per-repeat ratio arm / host.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from esper.kasmina import MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.leyline import HostConfig, KasminaConfig

ARMS = ("host", "dormant", "training", "blending")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["paper", "tiny"], choices=["tiny", "small", "paper"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="train steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (median is reported); ≥5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("docs/data/bench_dormant.json"))
    args = p.parse_args()
    if args.repeats < 5:
        p.error("--repeats must be ≥ 5 (medians of fewer repeats are noise on shared machines)")
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be ≥ 1")
    return args


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


def _time_block(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches)


def bench_preset(preset: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    host = CNNHost(HostConfig(preset=preset))
    start_state = {k: v.clone() for k, v in host.state_dict().items()}
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (args.batch_size,), generator=gen))
               for _ in range(args.steps)]
    models = {arm: _arm_model(arm, host) for arm in ARMS}
    seed_states = {arm: {k: v.clone() for k, v in m.state_dict().items()} for arm, m in models.items()}
    _time_block(models["host"], batches[:2])  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(args.repeats):
        order = ARMS[r % len(ARMS):] + ARMS[: r % len(ARMS)]  # rotate so no arm always runs first
        for arm in order:
            host.load_state_dict(start_state)  # identical starting weights for every arm and repeat
            models[arm].load_state_dict(seed_states[arm])
            times[arm].append(_time_block(models[arm], batches))
        print(f"  [{preset}] repeat {r + 1}/{args.repeats}: " + "  ".join(f"{a} {times[a][-1] * 1e3:.2f}ms" for a in ARMS), flush=True)
    ratios = {arm: statistics.median(t / h for t, h in zip(times[arm], times["host"])) for arm in ARMS}
    return {
        "preset": preset,
        "host_params": sum(p.numel() for p in host.parameters()),
        "median_ms": {arm: statistics.median(times[arm]) * 1e3 for arm in ARMS},
        "median_ratio_vs_host": ratios,
        "raw_seconds": times,
    }


def _code_version() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    args = _parse()
    results = []
    for preset in args.presets:
        print(f"benchmarking preset {preset!r}: batch {args.batch_size}, {args.steps} steps × {args.repeats} repeats", flush=True)
        results.append(bench_preset(preset, args))
    print("\n| host preset | host params | host ms/step | dormant / host | training / host | blending / host |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        q = r["median_ratio_vs_host"]
        print(f"| {r['preset']} | {r['host_params']:,} | {r['median_ms']['host']:.2f} | {q['dormant']:.3f} | {q['training']:.3f} | {q['blending']:.3f} |")
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "code_version": _code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
