"""One PPO iteration end to end on a tiny smoke world, then agent.pt export and reload."""

from __future__ import annotations

import numpy as np
import torch

from esper.leyline.features import feature_names
from esper.simic.config import TrainTamiyoConfig
from esper.runtime.resources import plan_runners
from esper.simic.env import EsperEnv
from esper.simic.ppo.algo import FINAL_METRIC, build_ppo_config
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
        assert 0.0 <= runners[FINAL_METRIC] <= 1.0
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
    from esper.simic.ppo.train import save_checkpoint

    cfg = TrainTamiyoConfig.model_validate(CFG)
    plan = plan_runners({"CPU": 2.0}, requested=1)
    algo = build_ppo_config(cfg, plan).build_algo()
    try:
        algo.train()
        save_checkpoint(algo, tmp_path, 1)
        save_checkpoint(algo, tmp_path, 1)  # a second save swaps folders without leaving debris
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


def _saved_agent(cfg: TrainTamiyoConfig, path, seed: int, hidden: int | None = None):
    """An agent.pt for `cfg`'s world with seeded random weights (not what a fresh PPO module would draw)."""
    from esper.tamiyo.policy import TamiyoPolicyNet

    env = EsperEnv(cfg.world)
    torch.manual_seed(seed)
    net = TamiyoPolicyNet(len(feature_names(env.action_spec)), env.action_spec.nvec, hidden=hidden or cfg.ppo.hidden)
    save_agent(path, net, env.action_spec, feature_names(env.action_spec), cfg.model_dump(mode="json"))
    return net.state_dict()


def test_warm_start_puts_the_agent_in_the_learner_and_the_env_runner(ray_session, tmp_path):
    """ppo.init_agent: after warm_start the learner's and the sampling runner's weights are agent.pt's, and PPO
    trains on from there."""
    from esper.simic.ppo.algo import load_init_agent, warm_start

    want = _saved_agent(TrainTamiyoConfig.model_validate(CFG), tmp_path / "a.pt", seed=123)
    cfg = TrainTamiyoConfig.model_validate(CFG | {"ppo": CFG["ppo"] | {"init_agent": str(tmp_path / "a.pt")}})
    algo = build_ppo_config(cfg, plan_runners({"CPU": 2.0}, requested=1)).build_algo()
    try:
        assert any(not torch.equal(want[k], v) for k, v in algo.get_module().net.state_dict().items())
        warm_start(algo, load_init_agent(cfg))
        learner = algo.learner_group.foreach_learner(lambda l: l.module["default_policy"].net.state_dict())
        for got in (algo.get_module().net.state_dict(), [r.get() for r in learner][0]):  # env runner, learner
            assert all(torch.equal(want[k], got[k].cpu()) for k in want)
        assert algo.train()["env_runners"]["num_episodes"] >= 1
    finally:
        algo.stop()


def test_an_init_agent_that_does_not_fit_the_world_is_a_config_error(tmp_path):
    """Missing file, another width, another action plane: ConfigError naming ppo.init_agent, before Ray starts."""
    import pytest

    from esper.leyline.experiment import ConfigError
    from esper.simic.ppo.algo import load_init_agent

    base = TrainTamiyoConfig.model_validate(CFG)
    _saved_agent(base, tmp_path / "wide.pt", seed=0, hidden=64)
    for name, kasmina in (("blueprints.pt", {"blueprints": ["conv_light"]}), ("blends.pt", {"blend": {"tempos": [2, 4]}})):
        _saved_agent(TrainTamiyoConfig.model_validate(CFG | {"world": CFG["world"] | {"kasmina": kasmina}}),
                     tmp_path / name, seed=0)
    for name, fragment in (("missing.pt", "not found"), ("wide.pt", "hidden width 64"),
                           ("blueprints.pt", "features differ"), ("blends.pt", "another action plane")):
        cfg = TrainTamiyoConfig.model_validate(CFG | {"ppo": CFG["ppo"] | {"init_agent": str(tmp_path / name)}})
        with pytest.raises(ConfigError, match=f"ppo.init_agent: .*{fragment}"):
            load_init_agent(cfg)
