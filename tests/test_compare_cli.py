"""compare_controllers.py as a user runs it: paired differences in its tables, and a crash that loses one run at most."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from esper.study.tables import paired_table

ROOT = Path(__file__).parents[1]


def _row(arm: str, seed: int, metric: float) -> dict:
    return {"arm": arm, "seed": seed, "val_metric": metric}


def test_paired_table_differences_each_seed_against_the_reference():
    rows = [_row("static", 0, -1.70), _row("static", 1, -1.80), _row("static", 2, -1.75),
            _row("stack", 0, -1.65), _row("stack", 1, -1.81), _row("stack", 2, -1.72)]
    table = paired_table(rows, ["static", "stack"], "neg_loss", ["static"])
    stack = next(line for line in table.splitlines() if line.startswith("| stack"))
    # differences +0.05, -0.01, +0.03: mean +0.0233, sample std 0.0306, SE 0.0306/√3 = 0.0176; ahead on 2 of 3 seeds
    assert "| +0.0233 [0.0176] (2/3) |" in stack
    assert "| -1.7267 ± 0.0802 |" in stack  # the arm's own final metric, mean ± sample std


def test_paired_table_refuses_arms_that_ran_different_seeds_or_a_missing_reference():
    rows = [_row("static", 0, 0.5), _row("static", 1, 0.6), _row("stack", 0, 0.7), _row("stack", 2, 0.4)]
    with pytest.raises(ValueError, match="different seeds"):
        paired_table(rows, ["static", "stack"], "accuracy", ["static"])
    with pytest.raises(ValueError, match="no arm"):
        paired_table(rows, ["static", "stack"], "accuracy", ["capacity"])


def _compare(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "experiments" / "compare_controllers.py"), "--out", str(out),
           "--set", "world.trainer.epochs=1", "--set", "arms=[wait]", "--set", "seeds=[0,1]", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _val_metrics(out: Path) -> dict:
    with open(out / "results.csv") as f:
        return {(r["arm"], r["seed"]): r["val_metric"] for r in csv.DictReader(f)}


def test_a_crashed_comparison_resumes_where_it_stopped_and_refuses_to_be_overwritten(tmp_path):
    out = tmp_path / "cmp"
    first = _compare(out)
    assert first.returncode == 0, first.stderr
    before = _val_metrics(out)
    assert len(before) == 2

    # a crash while the second run was being logged: one finished run and a torn line, no final tables
    log = out / "runs.jsonl"
    header, finished = log.read_text().splitlines()[:2]  # the comparison's identity, then its first run
    log.write_text(header + "\n" + finished + "\n" + '{"row": {"arm": "wa')
    (out / "results.csv").unlink()

    refused = _compare(out)  # without --resume: nothing in --out is touched
    assert refused.returncode != 0 and "pass --resume" in refused.stderr
    assert log.read_text().startswith(header + "\n" + finished) and not (out / "results.csv").exists()

    changed = _compare(out, "--resume", "--set", "world.trainer.lr=0.5")
    assert changed.returncode != 0 and "world.trainer.lr" in changed.stderr

    resumed = _compare(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 finished runs" in resumed.stdout
    assert resumed.stdout.count("== wait seed") == 1  # seed 0 was kept, seed 1 played again
    assert _val_metrics(out) == before  # the same numbers as the uninterrupted comparison
    assert [json.loads(line)["row"]["seed"] for line in log.read_text().splitlines()[2:]] == [1]
