"""Put arms of several compare_controllers.py outputs on one compute-to-target table and one metric-vs-FLOPs plot.

Variants of an arm that differ in a world setting (a plane option, a germination epoch) run as separate
comparisons; this reads their summary.json files and reports them against one big control:

    python experiments/merge_compare.py --out docs/data/compare_quick_compute_graft \\
        capacity=docs/data/compare_quick_compute:capacity static=docs/data/compare_quick_compute:static \\
        graft@3=docs/data/compare_quick_compute_graft/schedule_graft_e3:schedule

Each argument is LABEL=FOLDER[:ARM]: the runs of ARM (default: the folder's only arm) in FOLDER/summary.json,
shown as LABEL. The label `capacity` is the big control whose final metric is the target. Only runs of the same
protocol (world, budget, seeds) belong on one table: the seeds of every entry are checked to agree. Final metrics
are also differenced by seed against the --paired-vs labels (default: `capacity`, and `wait` or `static`, where present).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper.study.cli import checked
from esper.study.merge import merge, parse_entry
from esper.study.tables import plot_curves


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("entries", nargs="+", metavar="LABEL=FOLDER[:ARM]")
    p.add_argument("--out", type=Path, required=True, help="folder for merged_table.md and merged_metric_vs_flops.png")
    p.add_argument("--paired-vs", nargs="+", default=None, metavar="LABEL",
                   help="labels to difference every entry against, seed by seed (default: capacity and wait/static)")
    args = p.parse_args()
    entries = checked(lambda: [parse_entry(e) for e in args.entries])
    table, rows, labels, metric, target = checked(lambda: merge(entries, args.paired_vs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "merged_table.md").write_text("Merged with: python " + " ".join(sys.argv) + "\n\n" + table + "\n")
    plot_curves(rows, labels, metric, target, args.out / "merged_metric_vs_flops.png")
    print(table + f"\n\nwrote {args.out}/merged_table.md and merged_metric_vs_flops.png")


if __name__ == "__main__":
    main()
