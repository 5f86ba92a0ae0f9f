"""The fair comparison: does growth help at an equal budget? (esper/study/compare.py has the arms.)

    python experiments/compare_controllers.py                                  # smoke world, 3 seeds, minutes
    python experiments/compare_controllers.py --preset compare_quick           # CIFAR-10 subset, ≈ 12 min on 2 cores
    python experiments/compare_controllers.py --preset compare_quick --set world.trainer.budget_host_epochs=15
        # equal training compute: every arm spends what the static host spends in 15 epochs
    python experiments/compare_controllers.py --preset compare_full            # the GPU protocol
    python experiments/compare_controllers.py --set agent=runs/ppo/<run>/agent.pt --set 'arms=[wait,heuristic,ppo]'

Arms: wait (the static host), capacity (the growth plan fossilized at epoch 0: same parameters, no growth),
schedule (the growth plan from `schedule_epoch`), or any controller name (heuristic, ppo, random, plan:…).
Writes results.csv, summary.json, table.md (differences paired by seed against the capacity and wait arms),
acc_vs_params.png, metric_vs_flops.png and per-run telemetry under --out. Each finished run is logged at once
(OUT/runs.jsonl): after a crash, the same command with --resume plays only the runs that are missing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from esper.leyline.experiment import ConfigError
from esper.provenance import code_version
from esper.study.cli import checked, load, script_parser, show_config, show_progress
from esper.tolaria.data import DataError
from esper.study.compare import CompareConfig, run_comparison, start_comparison


def main() -> None:
    p = script_parser(__doc__, preset="compare_smoke", out="runs/compare/<time>", resume=True)
    args = p.parse_args()
    if args.resume and args.out is None:
        p.error("--resume needs the --out folder of the comparison to continue")
    cfg = load(p, args, CompareConfig)
    show_config(args, cfg)
    if len(cfg.seeds) < 3:
        print("warning: fewer than 3 seeds — mean ± std will not support a claim", file=sys.stderr)
    show_progress()
    out = args.out or Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(["python", *sys.argv]), "code_version": code_version()}  # the code that ran
    agent, runs = checked(lambda: start_comparison(cfg, out, args.resume))
    table = checked(lambda: run_comparison(cfg, out, agent, runs, meta), ConfigError, DataError)  # host ≠ task size…
    print("\n" + table + f"\n\nwrote {out}/(config.yaml, results.csv, summary.json, table.md, acc_vs_params.png, "
          "metric_vs_flops.png, telemetry/)")


if __name__ == "__main__":
    main()
