"""Put arms of several compare_controllers.py outputs on one compute-to-target table and one metric-vs-FLOPs plot.

Variants of an arm that differ in a world setting (a plane option, a germination epoch) run as separate
comparisons; this reads their summary.json files and reports them against one big control:

    python experiments/merge_compare.py --out docs/data/compare_quick_compute_graft \\
        capacity=docs/data/compare_quick_compute:capacity static=docs/data/compare_quick_compute:static \\
        graft@3=docs/data/compare_quick_compute_graft/schedule_graft_e3:schedule

Each argument is LABEL=FOLDER[:ARM]: the runs of ARM (default: the folder's only arm) in FOLDER/summary.json,
shown as LABEL. The label `capacity` is the big control whose final metric is the target. Only runs of the same
protocol (world, budget, seeds) belong on one table: the seeds of every entry are checked to agree. Final metrics
are also differenced by seed against the --paired-vs labels (default: `capacity` and `static`, where present).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _compute import compute_to_target, paired_table, plot_curves  # noqa: E402


def _entry(spec: str) -> tuple[str, Path, str | None]:
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER[:ARM], got {spec!r}")
    folder, _, arm = rest.partition(":")
    return label, Path(folder), arm or None


def _curves(label: str, folder: Path, arm: str | None) -> tuple[list[dict], str]:
    """The runs of `arm` in `folder`, relabelled `label`, and the task's metric name they report."""
    path = folder / "summary.json"
    if not path.is_file():
        sys.exit(f"error: {path} not found (a compare_controllers.py output folder has one)")
    summary = json.loads(path.read_text())
    curves, metric = summary["curves"], summary["runs"][0].get("metric", "accuracy")
    arms = sorted({c["arm"] for c in curves})
    if arm is None and len(arms) != 1:
        sys.exit(f"error: {folder} has arms {arms}: name one as {label}={folder}:ARM")
    arm = arm or arms[0]
    if arm not in arms:
        sys.exit(f"error: {folder} has no arm {arm!r} (arms: {arms})")
    return [dict(c, arm=label) for c in curves if c["arm"] == arm], metric


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("entries", nargs="+", type=_entry, metavar="LABEL=FOLDER[:ARM]")
    p.add_argument("--out", type=Path, required=True, help="folder for merged_table.md and merged_metric_vs_flops.png")
    p.add_argument("--paired-vs", nargs="+", default=None, metavar="LABEL",
                   help="labels to difference every entry against, seed by seed (default: capacity and static)")
    args = p.parse_args()
    rows, labels, metrics = [], [], set()
    for label, folder, arm in args.entries:
        curves, metric = _curves(label, folder, arm)
        rows += curves
        labels.append(label)
        metrics.add(metric)
    if len(metrics) != 1:
        sys.exit(f"error: the entries report different metrics {sorted(metrics)}: they cannot share one table")
    metric = metrics.pop()
    seeds = {label: sorted(r["seed"] for r in rows if r["arm"] == label) for label in labels}
    if len({tuple(s) for s in seeds.values()}) != 1:
        sys.exit(f"error: the entries ran different seeds {seeds}: they cannot share one table")
    table, target = compute_to_target(rows, labels, metric)
    references = args.paired_vs if args.paired_vs is not None else [x for x in ("capacity", "static") if x in labels]
    try:
        table += "\n\n" + paired_table(rows, labels, metric, references) if references else ""
    except ValueError as exc:
        sys.exit(f"error: --paired-vs: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "merged_table.md").write_text(
        "Merged with: python " + " ".join(sys.argv) + "\n\n" + table + "\n")
    plot_curves(rows, labels, metric, target, args.out / "merged_metric_vs_flops.png")
    print(table + f"\n\nwrote {args.out}/merged_table.md and merged_metric_vs_flops.png")


if __name__ == "__main__":
    main()
