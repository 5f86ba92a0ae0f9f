"""Offline data: recorded episodes round-trip through Parquet exactly as the policy saw and did them."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from esper.leyline import ActionMasks, FactoredAction
from esper.simic.env import EsperEnv
from esper.study.episodes import run_episode
from esper.simic.offline.dataset import STEP_COLUMNS, episode_id, episode_rows, rows_to_table, unflatten_obs
from esper.tamiyo.registry import controller_factory

from _support import tiny_world


@pytest.fixture(scope="module")
def env() -> EsperEnv:
    return EsperEnv(tiny_world(trainer={"epochs": 5, "batch_size": 32, "max_batches_per_epoch": 2}))


def test_a_recorded_episode_round_trips_through_parquet(env, tmp_path):
    steps: list[dict] = []
    stats = run_episode(env, controller_factory("eps:0.5:heuristic")(), seed=7, steps=steps)
    rows = episode_rows(steps, stats, "eps:0.5:heuristic", world={}, gamma=0.9)
    pq.write_table(rows_to_table(rows), tmp_path / "steps.parquet")
    back = pq.read_table(tmp_path / "steps.parquet").to_pydict()
    assert set(STEP_COLUMNS) <= set(back) and len(back["t"]) == len(steps) == env.world.trainer.epochs
    obs, new_obs = unflatten_obs(back), unflatten_obs(back, "new_obs")
    for t, step in enumerate(steps):
        for key in ("features", "action_mask"):
            np.testing.assert_array_equal(obs[key][t], step["obs"][key])
            np.testing.assert_array_equal(new_obs[key][t], step["new_obs"][key])
        assert back["actions"][t] == list(step["action"]) and back["rewards"][t] == pytest.approx(step["reward"])
        masks = ActionMasks.from_flat(env.action_spec, obs["action_mask"][t])
        assert masks.allows(FactoredAction.from_array(back["actions"][t])), "only executed (legal) actions are recorded"
    np.testing.assert_array_equal(obs["features"][1:], new_obs["features"][:-1])  # consecutive steps chain
    assert back["returns_to_go"][0] == pytest.approx(sum(s["reward"] * 0.9**t for t, s in enumerate(steps)), rel=1e-6)
    assert back["episode_return"][0] == pytest.approx(sum(s["reward"] for s in steps), rel=1e-6)
    assert set(back["eps_id"]) == {episode_id("eps:0.5:heuristic", 7)} and "_" not in back["eps_id"][0]
    assert back["terminateds"][-1] and not any(back["terminateds"][:-1])


def test_an_empty_episode_is_refused(env):
    stats = run_episode(env, controller_factory("wait")(), seed=1)
    with pytest.raises(ValueError, match="without steps"):
        episode_rows([], stats, "wait", {}, 1.0)


def test_the_recorder_refuses_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "record_episodes.py"
    from esper.world import WorldConfig
    from esper.runlog import ResumableLog

    ResumableLog(tmp_path / "episodes.jsonl", {"world": WorldConfig().model_dump(mode="json")}, False).append({"x": 1})
    for extra, message in ((["--controllers", "greedy"], "unknown controller 'greedy'"),
                           (["--seed-base", "99999", "--episodes", "2"], "evaluation episodes use the seeds"),
                           ([], "pass --resume"), (["--resume", "--set", "world.trainer.epochs=3"], "world.trainer.epochs")):
        proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), *extra], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
