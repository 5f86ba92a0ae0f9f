"""Offline RL: a recording made by Ray tasks, RLlib BC on it, and the clone PPO starts from."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from esper.leyline import ActionMasks, FactoredAction
from esper.leyline.features import feature_names
from esper.simic.config import TrainTamiyoConfig
from esper.simic.env import EsperEnv
from esper.simic.offline.dataset import unflatten_obs
from esper.simic.offline.pretrain import PretrainDataError, choose_episodes, read_recording
from esper.tamiyo.agent_file import load_agent

ROOT = Path(__file__).resolve().parents[1]

CFG = {
    "world": {"data": {"source": "synthetic", "limit": 200, "val_fraction": 0.2},
              "trainer": {"epochs": 4, "batch_size": 16, "max_batches_per_epoch": 1}, "val_images": 40},
    "ppo": {"train_batch_size": 32, "minibatch_size": 16, "num_epochs": 1, "hidden": 32},
    "pretrain": {"controllers": ["random", "heuristic"], "plan_space": 1, "episodes": 2, "top_pct": 50,
                 "iterations": 40, "batch_size": 32, "lr": 3e-3},
}


@pytest.fixture(scope="module")
def warm(ray_session, tmp_path_factory):
    """The warm start on a tiny world — record, clone — as a sweep makes it once for all its trials
    (tune_rewards.py; the main job's is the same warm_start_from_recording). (folder, clone path, summary, config)"""
    from esper.simic.tune.tuner import warm_start_once

    cfg = TrainTamiyoConfig.model_validate(CFG)
    sweep = tmp_path_factory.mktemp("sweep")
    trials_base = warm_start_once(cfg, sweep, "test")
    out = sweep / "warm_start"
    assert trials_base.pretrain is None and trials_base.ppo.init_agent == str(out / "pretrain" / "agent.pt")
    summary = json.loads((out / "pretrain" / "warm_start.json").read_text())
    return out, Path(trials_base.ppo.init_agent), summary, cfg


def test_the_recording_holds_every_controller_and_plan_and_ray_data_reads_it(warm, ray_session):
    out, _, summary, cfg = warm
    spec = EsperEnv(cfg.world).action_spec
    _, episodes = read_recording(out / "offline", feature_names(spec))
    plans = len(spec.slots) * len(spec.blueprints)  # every one-seed plan
    assert len(episodes) == (2 + plans) * 2 and len({e["eps_id"] for e in episodes}) == len(episodes)
    batch = ray_session.data.read_parquet(str(out / "offline" / "steps")).take_batch(8)  # what BC's reader gets
    obs = unflatten_obs(batch)  # Ray Data hands fixed-size lists over as one array per row
    assert obs["features"].shape == (8, len(feature_names(spec))) and obs["action_mask"].shape == (8, spec.mask_size)
    assert np.stack(batch["actions"]).shape == (8, 4)
    assert summary["bc"]["recorded_episodes"] == len(episodes) and summary["bc"]["episodes"] == len(episodes) // 2


def test_bc_learns_and_never_puts_probability_on_a_masked_action(warm):
    out, path, summary, cfg = warm
    losses = json.loads((out / "pretrain" / "summary.json").read_text())["losses"]
    assert len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5]), "BC must fit its data"
    spec = EsperEnv(cfg.world).action_spec
    net = load_agent(path, expected_features=feature_names(spec)).net
    steps = pq.read_table(out / "offline" / "steps").to_pydict()
    obs = unflatten_obs(steps)
    features, mask = torch.as_tensor(obs["features"]), torch.as_tensor(obs["action_mask"])
    every = list(itertools.product(*(range(n) for n in spec.nvec)))  # every factored action
    with torch.no_grad():
        p = torch.stack([net(features, mask, actions=torch.tensor([a] * len(features))).logp.exp() for a in every], 1)
    assert torch.allclose(p.sum(1), torch.ones(len(features)), atol=1e-5)
    for row, m in enumerate(obs["action_mask"]):
        masks = ActionMasks.from_flat(spec, m)
        illegal = [i for i, a in enumerate(every) if not masks.allows(FactoredAction.from_array(np.array(a)))]
        assert illegal and torch.all(p[row, illegal] == 0), f"step {row}: probability on a masked action"


def test_the_clone_loads_into_ppo_with_identical_weights(warm):
    from esper.runtime.resources import plan_runners
    from esper.simic.ppo.algo import build_ppo_config, load_init_agent, warm_start

    _, path, _, _ = warm
    cfg = TrainTamiyoConfig.model_validate(CFG | {"pretrain": None, "ppo": CFG["ppo"] | {"init_agent": str(path)}})
    want = load_agent(path).net.state_dict()
    algo = build_ppo_config(cfg, plan_runners({"CPU": 2.0}, requested=1)).build_algo()
    try:
        warm_start(algo, load_init_agent(cfg))
        learner = algo.learner_group.foreach_learner(lambda l: l.module["default_policy"].net.state_dict())
        for got in (algo.get_module().net.state_dict(), [r.get() for r in learner][0]):  # env runner, learner
            assert all(torch.equal(want[k], got[k].cpu()) for k in want)
    finally:
        algo.stop()


def test_a_resumed_recording_plays_only_what_is_missing_and_episodes_do_not_depend_on_tasks(warm, ray_session):
    from esper.simic.offline.record import record, recorded

    out, _, _, cfg = warm
    before = {(e["controller"], e["episode_seed"]): e["episode_return"] for e in recorded(out / "offline")}
    record(cfg.world, ["random"], [0, 1, 2], out / "offline", {}, chunk=1)  # seeds 0 and 1 were played in one task
    after = recorded(out / "offline")
    assert len(after) == len(before) + 1
    assert {(e["controller"], e["episode_seed"]): e["episode_return"] for e in after[:len(before)]} == before
    copy = out / "copy"
    redone = {e["episode_seed"]: e["episode_return"] for e in record(cfg.world, ["random"], [1, 0], copy, {}, chunk=1)}
    assert redone == {s: before[("random", s)] for s in (0, 1)}, "a random episode depends only on its seed"


def test_bad_or_empty_recordings_fail_with_a_clear_error(warm, tmp_path):
    out, _, _, cfg = warm
    names = feature_names(EsperEnv(cfg.world).action_spec)
    with pytest.raises(PretrainDataError, match="not a finished recording"):
        read_recording(tmp_path, names)
    with pytest.raises(PretrainDataError, match="another observation layout"):
        read_recording(out / "offline", names[:-1])
    _, episodes = read_recording(out / "offline", names)
    with pytest.raises(PretrainDataError, match="at least 2"):
        choose_episodes(episodes, top_pct=100 / len(episodes))
    with pytest.raises(PretrainDataError, match="no episodes of"):
        choose_episodes(episodes, 100, controllers=["wait"])
    broken = tmp_path / "broken"
    (broken / "steps").mkdir(parents=True)
    for name in ("manifest.json", "episodes.parquet"):
        (broken / name).write_bytes((out / "offline" / name).read_bytes())
    (broken / "steps" / "part.parquet").write_text("not parquet")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "pretrain_tamiyo.py"), "--data", str(broken),
                           "--out", str(tmp_path / "bc"), "--eval-episodes", "0"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "not readable as recorded steps" in proc.stderr


def test_the_main_job_config_names_a_bad_pretrain_setting():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="pretrain.controllers"):
        TrainTamiyoConfig.model_validate(CFG | {"pretrain": CFG["pretrain"] | {"controllers": ["nobody"]}})
    with pytest.raises(ValidationError, match="set one"):
        TrainTamiyoConfig.model_validate(CFG | {"ppo": CFG["ppo"] | {"init_agent": "a.pt"}})
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "ppo_multislot.py"), "--set",
                           "pretrain.controllers=[plan:conv_light@nowhere]", "--print-config"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "pretrain.controllers" in proc.stderr and "nowhere" in proc.stderr, proc.stderr


@pytest.mark.parametrize("clone_return, kept", [(0.7, "clone"), (0.5, "fine-tuned"), (0.6, "fine-tuned")])
def test_the_main_job_keeps_the_clone_only_when_it_validates_better(tmp_path, monkeypatch, clone_return, kept):
    """After fine-tuning, agent.pt is whichever of the two earns the higher mean return on validation seeds — which
    lie apart from the recording's and the evaluation's; a tie keeps the fine-tuned agent, which is kept either way."""
    import esper.study.episodes as evaluate
    from esper.study.episodes import EpisodeStats
    from esper.simic.offline.record import FIRST_EVAL_SEED
    from esper.simic.ppo.train import _keep_the_better

    (tmp_path / "pretrain").mkdir()
    (tmp_path / "agent.pt").write_bytes(b"fine-tuned")
    (tmp_path / "pretrain" / "agent.pt").write_bytes(b"clone")
    played = {}

    def fake(world, controllers, seeds, *args, **kwargs):
        played.update(controllers=controllers, seeds=seeds)
        ret = {"fine-tuned": 0.6, "clone": clone_return}
        return {k: [EpisodeStats(k, s, 0.3, ret[k], 0, 0, 0, 0.0, False, {}) for s in seeds] for k in controllers}

    monkeypatch.setattr(evaluate, "evaluate_in_parallel", fake)
    cfg = TrainTamiyoConfig.model_validate(CFG | {"pretrain": CFG["pretrain"] | {"validation_episodes": 4}})
    selection = _keep_the_better(cfg, tmp_path)
    assert selection["kept"] == kept and len(played["seeds"]) == 4
    assert all(s < FIRST_EVAL_SEED for s in played["seeds"]) and min(played["seeds"]) >= CFG["pretrain"]["episodes"]
    assert (tmp_path / "agent.pt").read_bytes() == (b"clone" if kept == "clone" else b"fine-tuned")
    assert (tmp_path / "finetuned_agent.pt").read_bytes() == b"fine-tuned"
    assert {p for _, p in played["controllers"].values()} == {str(tmp_path / "agent.pt"), str(tmp_path / "pretrain" / "agent.pt")}
    off = TrainTamiyoConfig.model_validate(CFG | {"pretrain": CFG["pretrain"] | {"validation_episodes": 0}})
    assert _keep_the_better(off, tmp_path) is None
