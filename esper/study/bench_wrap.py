"""Dormant overhead of `esper.wrap` on an unmodified torchvision ResNet-18 (what experiments/bench_wrap.py runs).

Arms, in one process, with identical weights (the wrapped model wraps a deep copy of the bare one) and the same
batches, interleaved step by step in rotating order:
  bare      resnet18(num_classes=10) as torchvision builds it
  wrapped   esper.wrap(...) of the same model with an empty (DORMANT) slot at each of the points
Each is timed on a no-grad eval forward and on a train step (forward + backward + SGD); each repeat keeps its
median step, and the results hold the median over repeats of the times and of wrapped / bare.
"""

from __future__ import annotations

import copy
import logging
import statistics

import torch
from torch import nn

from esper.study.bench import TimedArm, Timing, image_batches, markdown_table

log = logging.getLogger(__name__)
ARMS = ("bare", "wrapped")
MODES = ("forward", "train")


def models(points: list[str], timing: Timing) -> dict[str, nn.Module]:
    """The two arms' models with identical weights; bad `points` raise ValueError (esper.wrap's message)."""
    import esper
    from torchvision.models import resnet18

    torch.manual_seed(timing.seed)
    bare = resnet18(num_classes=10)
    example = image_batches(timing)[0][0][:2]  # what wrap traces the points on: the first batch's first two
    wrapped = esper.wrap(copy.deepcopy(bare), points, example_input=example)
    assert all(s.seed is None for s in wrapped.slots.values())  # every slot DORMANT
    return {"bare": bare, "wrapped": wrapped}


def bench(models: dict[str, nn.Module], timing: Timing) -> dict:
    """Per mode: median ms per arm, the median per-repeat ratio wrapped / bare, and every repeat's median step."""
    batches = image_batches(timing)
    arms = {name: TimedArm(model) for name, model in models.items()}
    for arm in arms.values():  # warm-up (allocator, kernels)
        for mode in MODES:
            arm.time(mode, *batches[0])
    times = {m: {a: [] for a in ARMS} for m in MODES}  # per-repeat median seconds
    for r in range(timing.repeats):
        for mode in MODES:
            step_times: dict[str, list[float]] = {a: [] for a in ARMS}
            for i, (x, y) in enumerate(batches):
                for a in (ARMS if (r + i) % 2 == 0 else ARMS[::-1]):  # rotate which arm goes first
                    step_times[a].append(arms[a].time(mode, x, y))
            for a in ARMS:  # the median step of a repeat shrugs off steps hit by other processes
                times[mode][a].append(statistics.median(step_times[a]))
        log.info(f"  repeat {r + 1}/{timing.repeats}: " + "  ".join(
            f"{m} bare {times[m]['bare'][-1] * 1e3:.1f}ms wrapped {times[m]['wrapped'][-1] * 1e3:.1f}ms" for m in MODES))
    return {mode: {
        "median_ms": {a: statistics.median(times[mode][a]) * 1e3 for a in ARMS},
        "median_ratio_wrapped_vs_bare": statistics.median(w / b for w, b in zip(times[mode]["wrapped"], times[mode]["bare"])),
        "per_repeat_median_seconds": times[mode],
    } for mode in MODES}


def table(results: dict) -> str:
    return markdown_table(["step", "bare ms", "wrapped (dormant) ms", "wrapped / bare"],
                          [[mode, f"{r['median_ms']['bare']:.2f}", f"{r['median_ms']['wrapped']:.2f}",
                            f"{r['median_ratio_wrapped_vs_bare']:.3f}"] for mode, r in results.items()])
