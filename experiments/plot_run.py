"""Turn a run's telemetry (Parquet) into a picture: accuracy over epochs with each seed's lifecycle as
coloured spans per slot, and parameter count over time.

    python experiments/plot_run.py runs/compare/<time>/telemetry/heuristic-seed0.parquet --out lifecycle.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esper.nissa.plot import plot_lifecycle
from esper.study.cli import fail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("telemetry", type=Path, help="a run's telemetry .parquet")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: beside the telemetry)")
    args = p.parse_args()
    if not args.telemetry.is_file():
        fail(f"telemetry file not found: {args.telemetry}")
    out = args.out or args.telemetry.with_suffix(".png")
    try:
        plot_lifecycle(args.telemetry, out)
    except (ValueError, KeyError) as exc:
        fail(f"{args.telemetry} is not an Esper telemetry file ({exc})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
