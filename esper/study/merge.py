"""Arms of several comparisons on one table: their runs relabelled, checked to share a protocol's seeds and metric."""

from __future__ import annotations

import json
from pathlib import Path


def parse_entry(spec: str) -> tuple[str, Path, str | None]:
    """'LABEL=FOLDER[:ARM]' → (label, folder, arm or None); ValueError on anything else."""
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise ValueError(f"expected LABEL=FOLDER[:ARM], got {spec!r}")
    folder, _, arm = rest.partition(":")
    return label, Path(folder), arm or None


def entry_curves(label: str, folder: Path, arm: str | None) -> tuple[list[dict], str]:
    """The runs of `arm` in a comparison's `folder` (its summary.json), relabelled `label`, and their metric name."""
    path = folder / "summary.json"
    if not path.is_file():
        raise ValueError(f"{path} not found (a compare_controllers.py output folder has one)")
    summary = json.loads(path.read_text())
    curves, metric = summary["curves"], summary["runs"][0].get("metric", "accuracy")
    arms = sorted({c["arm"] for c in curves})
    if arm is None and len(arms) != 1:
        raise ValueError(f"{folder} has arms {arms}: name one as {label}={folder}:ARM")
    arm = arm or arms[0]
    if arm not in arms:
        raise ValueError(f"{folder} has no arm {arm!r} (arms: {arms})")
    return [dict(c, arm=label) for c in curves if c["arm"] == arm], metric


def merge(entries: list[tuple[str, Path, str | None]], paired_vs: list[str] | None) -> tuple[str, list[dict], list[str], str, float | None]:
    """The merged table (compute to target, then differences paired by seed against `paired_vs`, default the
    `capacity` and `wait`/`static` labels present), with its rows, labels, metric and target."""
    from esper.study.tables import compute_to_target, paired_table

    rows, labels, metrics = [], [], set()
    for label, folder, arm in entries:
        curves, metric = entry_curves(label, folder, arm)
        rows += curves
        labels.append(label)
        metrics.add(metric)
    if len(metrics) != 1:
        raise ValueError(f"the entries report different metrics {sorted(metrics)}: they cannot share one table")
    metric = metrics.pop()
    seeds = {label: sorted(r["seed"] for r in rows if r["arm"] == label) for label in labels}
    if len({tuple(s) for s in seeds.values()}) != 1:
        raise ValueError(f"the entries ran different seeds {seeds}: they cannot share one table")
    table, target = compute_to_target(rows, labels, metric)
    references = paired_vs if paired_vs is not None else [x for x in ("capacity", "wait", "static") if x in labels]
    if references:
        try:
            table += "\n\n" + paired_table(rows, labels, metric, references)
        except ValueError as exc:
            raise ValueError(f"--paired-vs: {exc}") from None
    return table, rows, labels, metric, target
