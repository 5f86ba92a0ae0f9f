"""The planted audit: does Emrakul cull a useless fossil and keep an essential one, seed after seed?

    python experiments/emrakul_planted.py                          # seeds 0–9, ≈ 6 min
    python experiments/emrakul_planted.py --seeds 10 --out docs/data/emrakul_planted.json
    python experiments/emrakul_planted.py --set world.emrakul.rent_weight=0.05

Each run's telemetry goes to OUT_STEM/telemetry/seedN.parquet (experiments/plot_run.py draws it).

Each run trains the world of --preset (default emrakul_planted: a tiny host with a narrow last block, synthetic
images) with two fossils planted at epoch 0: an essential conv_heavy seed in the narrow last block, trained with
the host, and a useless conv_light seed in the first block with its output layer frozen at zero (esper/study/planted.py).
Emrakul audits them one at a time. A run passes when the useless fossil is culled and the essential one is still a
fossil at the end. Exit code 1 if fewer than --need of the runs pass.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from esper.study.cli import WorldPreset, fail, load, script_parser, show_config, show_progress
from esper.study.planted import run_planted, table


def main() -> None:
    p = script_parser(__doc__, preset="emrakul_planted", out="docs/data/emrakul_planted.json", out_file=True)
    p.add_argument("--seeds", type=int, default=10, help="runs, seeds 0 … N−1 (default 10)")
    p.add_argument("--need", type=int, default=9, help="runs that must pass (default 9)")
    args = p.parse_args()
    if args.seeds < 1 or not 0 <= args.need <= args.seeds:
        fail(f"--seeds must be ≥ 1 and 0 ≤ --need ≤ --seeds, got {args.seeds} and {args.need}")
    cfg = load(p, args, WorldPreset)
    if cfg.world.host.name != "cnn":
        fail(f"world.host: the planted audit needs the CNN host (conv seeds), got {cfg.world.host.name!r}")
    show_config(args, cfg)
    show_progress()
    t0 = time.perf_counter()
    out = args.out or Path("docs/data/emrakul_planted.json")
    rows = run_planted(cfg.world, list(range(args.seeds)), out.with_suffix("") / "telemetry")
    passed = sum(r["passed"] for r in rows)
    print("\n" + table(rows) + f"\n\n{passed}/{len(rows)} runs passed (need {args.need})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "seconds": time.perf_counter() - t0,
                               "passed": passed, "runs": rows}, indent=2))
    print(f"wrote {out}")
    if passed < args.need:
        sys.exit(1)


if __name__ == "__main__":
    main()
