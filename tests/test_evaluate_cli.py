"""experiments/evaluate_tamiyo.py: fixed growth plans next to the baselines, paired on the same seeds; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "evaluate_tamiyo.py"
TINY_WORLD = ["--set", "world.trainer.epochs=4", "--set", "world.trainer.max_batches_per_epoch=2",
              "--set", "world.data.limit=400", "--set", "world.val_images=64"]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--preset", "smoke", *TINY_WORLD, "--out", str(tmp_path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_plans_are_played_and_paired_with_the_baselines(tmp_path):
    proc = _run(tmp_path, "--episodes", "2", "--controllers", "wait", "plan:conv_light@block3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "evaluation.json").read_text())
    plan = report["results"]["plan:conv_light@block3"]
    assert plan["germinated"]["mean"] == 1.0 and report["results"]["wait"]["germinated"]["mean"] == 0.0
    paired = report["paired"]["plan:conv_light@block3 - wait"]
    played = {(r["controller"], r["seed"]): r for r in report["episodes"]}
    by_hand = sum(played[("plan:conv_light@block3", s)]["final_metric"] - played[("wait", s)]["final_metric"]
                  for s in report["seeds"]) / len(report["seeds"])
    assert abs(paired["final_metric"]["mean"] - by_hand) < 1e-9
    assert "plan:conv_light@block3 - wait" in (tmp_path / "evaluation.md").read_text()


def test_a_bad_plan_is_a_one_line_error(tmp_path):
    for plan, message in (("plan:conv_light", "blueprint@slot"), ("plan:warp_drive@block1", "blueprint 'warp_drive'")):
        proc = _run(tmp_path, "--episodes", "1", "--controllers", "wait", plan)
        assert proc.returncode != 0
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_named_worlds_are_played_on_the_same_seeds_and_pooled(tmp_path):
    worlds = tmp_path / "worlds.yaml"
    worlds.write_text("worlds:\n  - {name: cheap, set: {reward.rent_lambda: 0.001}}\n"
                      "  - {name: dear, set: {reward.rent_lambda: 0.5, trainer.epochs: 3}}\n")
    proc = _run(tmp_path, "--episodes", "2", "--controllers", "wait", "plan:conv_light@block3", "--worlds", str(worlds))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert list(report["worlds"]) == ["cheap", "dear"]
    assert report["worlds"]["dear"]["world"]["reward"]["rent_lambda"] == 0.5
    per_world = [report["worlds"][w]["paired"]["plan:conv_light@block3 - wait"]["episode_return"]["mean"]
                 for w in ("cheap", "dear")]
    pooled = report["pooled"]["paired"]["plan:conv_light@block3 - wait"]["episode_return"]["mean"]
    assert abs(pooled - sum(per_world) / 2) < 1e-9 and per_world[0] > per_world[1], "rent makes the plan dearer"
    assert "## Pooled over 2 worlds" in (tmp_path / "evaluation.md").read_text()
    response = report["rent_response"]["plan:conv_light@block3"]
    assert response["spearman_rent_vs_ratio"] is None, "a fixed plan grows the same at every rent: ρ undefined"
    assert [w["germinations"] for w in response["worlds"]] == [{"conv_light@block3": 1.0}] * 2
    assert report["rent_response"]["wait"]["worlds"][0]["germinations"] == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("worlds:\n  - {name: typo, set: {reward.rent_lamda: 0.1}}\n")
    proc = _run(tmp_path, "--episodes", "1", "--controllers", "wait", "--worlds", str(bad))
    assert proc.returncode != 0 and "world 'typo'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_plan_search_plays_every_small_plan_and_ranks_them_by_return(tmp_path):
    proc = _run(tmp_path, "--episodes", "1", "--controllers", "wait", "--plan-space", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "evaluation.json").read_text())
    ranked = report["plan_search"]
    assert len(ranked) == 1 + 3 * 3, "WAIT and one seed of each of 3 blueprints in each of 3 slots"
    returns = [x["return"] for x in ranked]
    assert returns == sorted(returns, reverse=True)
    assert {x["controller"]: x["return"] for x in ranked} == {
        n: r["episode_return"]["mean"] for n, r in report["results"].items()}
    assert f"best: {ranked[0]['controller']}" in (tmp_path / "evaluation.md").read_text()


def test_the_family_verdict_reads_paired_returns_rent_response_and_real_data_worlds():
    from esper.study.verdict import verdict

    def pair(mean, se):
        return {"episode_return": {"mean": mean, "se": se}}

    def world(source, rent, grown):
        return {"world": {"data": {"source": source}, "reward": {"rent_lambda": rent}},
                "paired": {"ppo - plan:x@b": pair(0.01, 0.02)}, "results": {}}

    report = {"seeds": [1, 2], "worlds": {"a": world("synthetic", 0.01, {}), "c": world("/d/cifar.parquet", 0.5, {})},
              "pooled": {"paired": {"ppo - plan:x@b": pair(0.3, 0.1), "ppo - heuristic": pair(0.5, 0.1),
                                    "ppo - wait": pair(0.2, 0.05)}},
              "rent_response": {"ppo": {"spearman_rent_vs_ratio": -1.0, "worlds": [
                  {"germinations": {"conv_heavy@block3": 1.0}}, {"germinations": {}}]}}}
    text, ok = verdict(report, "plan:x@b")
    assert ok and "PASS" in text and "- c: +0.010 [0.020] — not ahead" in text and "- a:" not in text
    report["pooled"]["paired"]["ppo - wait"] = pair(0.2, 0.11)  # ahead, but by less than 2 SE
    assert verdict(report, "plan:x@b")[1] is False
    report["pooled"]["paired"]["ppo - wait"] = pair(0.2, 0.05)
    report["rent_response"]["ppo"]["spearman_rent_vs_ratio"] = -0.5
    assert verdict(report, "plan:x@b")[1] is False


def test_an_interrupted_evaluation_resumes_without_replaying_or_mixing(tmp_path):
    """The evaluation's log (esper.runlog.ResumableLog): finished sets survive (a line cut short by a crash is
    dropped), are read back instead of played, a log of another evaluation is refused naming what differs, and
    without --resume a log with finished work is refused rather than overwritten."""
    from dataclasses import asdict

    import pytest

    from esper.runlog import LogError, ResumableLog
    from esper.study.episodes import EpisodeStats
    from esper.study.evaluate import play_controllers

    path, identity = tmp_path / "episodes.jsonl", {"agent": "fp", "seeds": [1, 2]}
    played = [EpisodeStats("wait", s, 0.5 + s, 0.1, 0, 0, 0, 0.0, False, {"wait": 4}, metric_name="accuracy") for s in (1, 2)]
    ResumableLog(path, identity, resume=False).append(
        {"world": "cheap", "controller": "wait", "episodes": [asdict(e) for e in played]})
    with open(path, "a") as f:
        f.write('{"world": "cheap", "contr')  # the crash
    log = ResumableLog(path, identity, resume=True)

    again = play_controllers(None, ["wait"], [1, 2], None, log, "cheap")  # no env: playing would fail
    assert again["wait"] == played
    with pytest.raises(LogError, match="agent"):
        ResumableLog(path, {"agent": "another agent", "seeds": [1, 2]}, resume=True)
    with pytest.raises(LogError, match="--resume") as refused:
        ResumableLog(path, identity, resume=False)
    assert "\n" not in str(refused.value), "one line"


def test_a_resumed_evaluation_gives_the_same_report(tmp_path):
    """End to end: an evaluation cut after its first controller, resumed, writes what an uninterrupted one does."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _run(whole, "--episodes", "2", "--controllers", "wait", "plan:conv_light@block3").returncode == 0
    assert _run(cut, "--episodes", "2", "--controllers", "wait").returncode == 0
    (cut / "evaluation.json").unlink()
    refused = _run(cut, "--episodes", "2", "--controllers", "wait", "plan:conv_light@block3")
    assert refused.returncode == 2 and "--resume" in refused.stderr and "Traceback" not in refused.stderr
    proc = _run(cut, "--episodes", "2", "--controllers", "wait", "plan:conv_light@block3", "--resume")
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "evaluation.json").read_text()) for d in (whole, cut))
    assert a["results"] == b["results"] and a["paired"] == b["paired"]


def test_the_plan_space_starts_each_plan_at_every_requested_epoch():
    from types import SimpleNamespace

    from esper.tamiyo import PlanTamiyo
    from esper.tamiyo.registry import plan_space

    plans = plan_space(SimpleNamespace(slots=("block1", "block2"), blueprints=("a", "b")), 2, [0, 5])
    assert len(plans) == len(set(plans)) == (2 * 2 + 1 * 2 * 2) * 2, "(1-seed plans + 2-seed plans) × 2 starts"
    assert {"plan:a@block2", "plan:a@block2,epoch=5", "plan:b@block2+a@block1,epoch=5"} <= set(plans)
    starts = {PlanTamiyo.parse(p.removeprefix("plan:")).start_epoch for p in plans}
    assert starts == {0, 5}
