"""What the CPU timing benchmarks share: their common options, and the JSON they write (results beside the command,
arguments, code version and machine)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from esper.provenance import code_version


def parse_bench_args(p: argparse.ArgumentParser, *, batch_size: int, steps: int, repeats: int, out_flag: str,
                     out: Path, min_batch: int = 1) -> argparse.Namespace:
    """Add the options every timing benchmark shares to `p` (its own already added), parse and check them."""
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per repeat (each timed alone, arms interleaved)")
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats (median is reported); ≥5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = least sensitive to other processes)")
    p.add_argument(out_flag, type=Path, default=out, help="where the JSON results go")
    args = p.parse_args()
    if args.repeats < 5:
        p.error("--repeats must be ≥ 5 (medians of fewer repeats are noise on shared machines)")
    if args.steps < 1 or args.batch_size < min_batch:
        p.error(f"--steps must be ≥ 1 and --batch-size ≥ {min_batch}")
    return args


def write_bench_json(path: Path, args: argparse.Namespace, results: Any) -> None:
    """Write {"meta": …, "results": results} to `path` (folders created) and say so."""
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
    print(f"\nwrote {path}")
