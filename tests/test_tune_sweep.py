"""Tune sweeps on a tiny world: a 2×2 grid completes with TensorBoard files, results and the report; a crashed
trial restarts from its checkpoint; an interrupted experiment resumes without redoing finished trials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from esper.leyline.experiment import ConfigError, load_config
from esper.simic.tune.config import SweepConfig

from esper.simic.tune.tuner import build_tuner, check_search, sweep_base

ROOT = Path(__file__).parents[1]

TINY = """
base: smoke
base_overrides: [world.data.limit=300, world.trainer.epochs=3, world.trainer.max_batches_per_epoch=2,
                 world.val_images=60, ppo.train_batch_size=24, ppo.minibatch_size=12, ppo.num_epochs=1, pretrain=null]
search:
  world.reward.rent_lambda: {grid: [0.0, 0.5]}
  world.reward.pbrs_weight: {grid: [0.1, 0.5]}
iterations: 2
eval_episodes: 2
"""


def sweep_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY + extra)
    return path


def test_grid_completes_with_dashboards_results_and_report(ray_session, tmp_path):
    """Four trials finish; each has TensorBoard events and a final objective; the report ranks them."""
    from esper.simic.tune.report import write_report

    sweep = load_config(sweep_file(tmp_path), model=SweepConfig)
    base = sweep_base(sweep)
    grid = build_tuner(sweep, base, "grid", str(tmp_path / "tune"), 2, resume=False).fit()
    out = tmp_path / "tune" / "grid"
    assert len(grid) == 4 and not grid.errors
    for result in grid:
        assert list(Path(result.path).glob("events.out.tfevents.*")), result.path
        assert "esper/objective" in result.metrics and result.metrics["training_iteration"] == 2
    md = write_report(grid, sweep, out, command="test")
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 4 and set(df["world.reward.rent_lambda"]) == {0.0, 0.5}
    assert list(df.objective) == sorted(df.objective, reverse=True)
    assert all((out / f).stat().st_size > 0 for f in ("pareto.png", "objective_vs_params.png", "training.png"))
    assert (out / "best_agent.pt").is_file() and "Best rent λ" in md
    as_text = write_report(grid, sweep, tmp_path / "as_text", command="test", metric="neg_loss")
    assert "eval accuracy" in md and "eval neg_loss" in as_text and "accuracy" not in as_text, "the task's metric names it"
    _tensorboard_shows_every_trial(out, [Path(r.path).relative_to(out).as_posix() for r in grid])


def _tensorboard_shows_every_trial(folder: Path, trials: list[str]) -> None:
    """TensorBoard over the sweep folder (on 127.0.0.1, stopped by its handle): its HTTP data API lists every trial
    as a run with the objective and the training scalars under the names PPO runs use (no 'ray/tune/' prefix);
    afterwards its process is gone and its port free."""
    from esper.nissa.dashboards import TensorBoard
    from esper.serve.launch import free_loopback_port

    port = free_loopback_port()
    with TensorBoard(folder, port=port) as board:
        deadline, tags = time.monotonic() + 30, {}
        while time.monotonic() < deadline and not all("esper/objective" in tags.get(t, {}) for t in trials):
            time.sleep(1)
            tags = requests.get(board.url + "/data/plugin/scalars/tags", timeout=10).json()
        runs = requests.get(board.url + "/data/runs", timeout=10).json()
    assert set(trials) <= set(runs), (trials, runs)
    for trial in trials:
        assert {"esper/objective", "train/final_metric", "train/excess_param_ratio", "world/rent_lambda",
                "ops/germinate"} <= set(tags[trial]), sorted(tags[trial])
        assert not any(tag.startswith("ray/tune/") for tag in tags[trial])
    assert board.proc.poll() is not None, "TensorBoard still running"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again


def test_a_crashing_trial_restarts_from_its_checkpoint(ray_session, tmp_path):
    """fail_once raises at iteration 2; Tune restarts the trial from the iteration-1 checkpoint and it finishes."""
    from ray import tune

    from esper.simic.tune.trial import tamiyo_trial

    sweep = load_config(sweep_file(tmp_path), model=SweepConfig)
    base = sweep_base(sweep)
    marker = tmp_path / "failed-once"
    space = {"base": base.model_dump(mode="json"), "overrides": {"world.reward.rent_lambda": 0.05}, "iterations": 3,
             "eval_episodes": 1, "objective_rent": 0.05, "fail_once": str(marker)}
    tuner = tune.Tuner(tune.with_resources(tamiyo_trial, {"cpu": 1}), param_space=space,
                       run_config=tune.RunConfig(name="crash", storage_path=str(tmp_path / "tune"),
                                                 failure_config=tune.FailureConfig(max_failures=1)))
    result = tuner.fit()[0]
    assert marker.exists(), "the failure was not injected"
    assert result.error is None
    assert result.metrics["training_iteration"] == 3
    assert result.metrics["resumed_from"] == 1.0  # restarted from the checkpoint, not from scratch


def test_interrupted_sweep_resumes_without_redoing_finished_trials(tmp_path):
    """SIGINT after the first trial finishes; --resume completes the rest; the finished trial is not rerun."""
    path = tmp_path / "tiny.yaml"  # two trials, one at a time: the least that has a finished and an unfinished one
    path.write_text(TINY.replace("  world.reward.pbrs_weight: {grid: [0.1, 0.5]}\n", "") + "max_concurrent: 1\n")
    storage = tmp_path / "tune"
    cmd = [sys.executable, str(ROOT / "experiments" / "tune_rewards.py"), "--preset", str(path), "--out", str(storage)]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")  # the script secures its own cluster
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _finished_trials(storage / "tiny"):
            time.sleep(1)
        assert _finished_trials(storage / "tiny"), "no trial finished within 240 s"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _finished_trials(storage / "tiny")
    assert len(first) < 2, "the sweep finished before it was interrupted"
    lines_before = {p: len((p / "result.json").read_text().splitlines()) for p in first}
    subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, check=True, timeout=420, capture_output=True)
    df = pd.read_csv(storage / "tiny" / "trials.csv")
    assert len(df) == 2 and (df.status == "done").all() and df.objective.notna().all()
    for p, n in lines_before.items():  # a trial that had finished reported no new results after resuming
        assert len((p / "result.json").read_text().splitlines()) == n, p


def _finished_trials(folder: Path) -> list[Path]:
    done = []
    for p in (r.parent for r in folder.glob("*/result.json")):
        results = (p / "result.json").read_text().splitlines() if (p / "result.json").exists() else []
        if results and "esper/objective" in json.loads(results[-1]):
            done.append(p)
    return done


@pytest.mark.parametrize("bad, field", [
    ("search:\n  world.reward.rent_lambda: {grid: [-1.0]}\n", "rent_lambda"),
    ("search:\n  world.reward.no_such_field: {grid: [1.0]}\n", "no_such_field"),
    ("search:\n  world.reward.rent_lambda: {grid: [0.1], uniform: [0, 1]}\n", "exactly one"),
    ("search: {}\n", "at least one"),
])
def test_bad_sweeps_fail_at_start_up_naming_the_field(tmp_path, bad, field):
    """Invalid search spaces are refused before Ray starts, with the offending field in the message."""
    path = tmp_path / "bad.yaml"
    path.write_text("base: smoke\n" + bad)
    with pytest.raises(ConfigError, match=field):
        sweep = load_config(path, model=SweepConfig)
        check_search(sweep, sweep_base(sweep))


def test_a_family_sweep_scores_trials_by_return_and_a_fixed_world_by_rented_accuracy():
    """objective_rent None (world families: rent varies by episode) → the objective is the mean episode return;
    a number → accuracy − objective_rent × excess ratio, as before."""
    from esper.simic.ppo.algo import training_scalars
    from esper.simic.tune.trial import TRAIN_OBJECTIVE, _objective, _train_metrics

    assert _objective(0.6, 0.5, 0.25, None) == 0.25
    assert _objective(0.6, 0.5, 0.25, 0.1) == pytest.approx(0.55)
    result = {"env_runners": {"episode_return_mean": 0.3}}
    assert _train_metrics(training_scalars(result), None)[TRAIN_OBJECTIVE] == 0.3
