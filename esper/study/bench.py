"""What the CPU timing benchmarks share: their common options, their synthetic batches, a timed arm, and the JSON
they write (results beside the command, arguments, code version and machine)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esper.provenance import code_version


@dataclass(frozen=True)
class Timing:
    """How a timing benchmark measures: batch size, timed steps per repeat, interleaved repeats, seed."""

    batch_size: int
    steps: int
    repeats: int
    seed: int = 0

    @classmethod
    def of(cls, args: argparse.Namespace) -> "Timing":
        return cls(args.batch_size, args.steps, args.repeats, args.seed)


def parse_bench_args(p: argparse.ArgumentParser, *, batch_size: int, steps: int, repeats: int, out: Path,
                     min_batch: int = 1) -> argparse.Namespace:
    """Add the options every timing benchmark shares to `p` (its own already added), parse and check them."""
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per repeat (each timed alone, arms interleaved)")
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats (median is reported); ≥5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = least sensitive to other processes)")
    p.add_argument("--out", type=Path, default=out, metavar="PATH", help="where the JSON results go (default %(default)s)")
    args = p.parse_args()
    if args.repeats < 5:
        p.error("--repeats must be ≥ 5 (medians of fewer repeats are noise on shared machines)")
    if args.steps < 1 or args.batch_size < min_batch:
        p.error(f"--steps must be ≥ 1 and --batch-size ≥ {min_batch}")
    return args


def image_batches(timing: Timing) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`timing.steps` CIFAR-shaped batches (3×32×32 images, 10 classes), the same for a given seed."""
    gen = torch.Generator().manual_seed(timing.seed)
    return [(torch.randn(timing.batch_size, 3, 32, 32, generator=gen),
             torch.randint(0, 10, (timing.batch_size,), generator=gen)) for _ in range(timing.steps)]


class TimedArm:
    """One arm's model and SGD optimiser; `time(mode, x, y)` runs one no-grad eval forward ("forward") or one train
    step ("train") and returns its seconds. The mode is switched before the clock starts: only the step is timed."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.mode = model, None
        self.start = {k: v.clone() for k, v in model.state_dict().items()}
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def reset(self) -> None:
        """Back to the starting weights with a fresh optimiser (repeats start alike)."""
        self.model.load_state_dict(self.start)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def time(self, mode: str, x: torch.Tensor, y: torch.Tensor) -> float:
        if mode != self.mode:
            self.model.train(mode == "train")
            self.mode = mode
        t0 = time.perf_counter()
        if mode == "forward":
            with torch.no_grad():
                self.model(x)
        else:
            self.opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(self.model(x), y).backward()
            self.opt.step()
        return time.perf_counter() - t0


def markdown_table(columns: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A markdown table of `columns` and `rows`: the first `left` columns left-aligned, numbers right-aligned."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * left + "---:|" * (len(columns) - left)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_bench_json(path: Path, args: argparse.Namespace, results: Any) -> None:
    """Write {"meta": …, "results": results} to `path` (folders created)."""
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "code_version": code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
