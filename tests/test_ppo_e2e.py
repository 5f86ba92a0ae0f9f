"""One PPO iteration end to end on a tiny smoke world, then agent.pt export and reload."""

from __future__ import annotations

import numpy as np
import torch

from esper.leyline.features import feature_names
from esper.leyline.world import TrainTamiyoConfig
from esper.runtime.resources import plan_runners
from esper.simic.env import EsperEnv
from esper.simic.ppo import FINAL_ACCURACY, build_ppo_config
from esper.tamiyo.agent_file import load_agent, save_agent

CFG = {
    "world": {"data": {"source": "synthetic", "limit": 200, "val_fraction": 0.2},
              "trainer": {"epochs": 4, "batch_size": 16, "max_batches_per_epoch": 1}, "val_images": 40},
    "ppo": {"train_batch_size": 32, "minibatch_size": 16, "num_epochs": 2, "hidden": 32},
}


def test_one_ppo_iteration_and_agent_export(ray_session, tmp_path):
    cfg = TrainTamiyoConfig.model_validate(CFG)
    plan = plan_runners({"CPU": 2.0}, requested=1)  # CPU only: the session's GPUs are logical
    algo = build_ppo_config(cfg, plan).build_algo()
    try:
        before = {k: v.clone() for k, v in algo.get_module().net.state_dict().items()}
        result = algo.train()
        runners = result["env_runners"]
        assert runners["num_episodes"] >= 1 and runners["episode_len_mean"] == 4
        assert 0.0 <= runners[FINAL_ACCURACY] <= 1.0
        learner = result["learners"]["default_policy"]
        assert np.isfinite(learner["entropy"]) and learner["entropy"] > 0
        net = algo.get_module().net
        assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # PPO updated the policy
        env = EsperEnv(cfg.world)
        save_agent(tmp_path / "agent.pt", net, env.action_spec, feature_names(env.action_spec), cfg.model_dump(mode="json"))
    finally:
        algo.stop()
    agent = load_agent(tmp_path / "agent.pt", expected_features=feature_names(env.action_spec))
    obs, _ = env.reset(seed=3)
    f, m = torch.as_tensor(obs["features"])[None], torch.as_tensor(obs["action_mask"])[None]
    assert torch.equal(agent.net(f, m, mode="greedy").actions, net.cpu()(f, m, mode="greedy").actions)


def test_checkpoint_restores_the_policy_exactly(ray_session, tmp_path):
    from esper.simic.train import _save_checkpoint

    cfg = TrainTamiyoConfig.model_validate(CFG)
    plan = plan_runners({"CPU": 2.0}, requested=1)
    algo = build_ppo_config(cfg, plan).build_algo()
    try:
        algo.train()
        _save_checkpoint(algo, tmp_path, 1)
        _save_checkpoint(algo, tmp_path, 1)  # a second save swaps folders without leaving debris
        saved = {k: v.clone() for k, v in algo.get_module().net.state_dict().items()}
    finally:
        algo.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert (tmp_path / "checkpoint" / "esper_iteration.txt").read_text() == "1"
    fresh = build_ppo_config(cfg, plan).build_algo()
    try:
        fresh.restore_from_path(str((tmp_path / "checkpoint").resolve()))
        restored = fresh.get_module().net.state_dict()
        assert all(torch.equal(saved[k], restored[k]) for k in saved)
    finally:
        fresh.stop()
