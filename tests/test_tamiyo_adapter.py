"""Domain adapters on a frozen core: a fresh one is a no-op, training one never moves the core, it is small, it
refuses other cores, core.pt / adapter.pt / agent.pt round-trip without pickle, and re-attaching an adapter
reproduces its decisions exactly after another domain's adapter has been used."""

from __future__ import annotations

import pytest
import torch

from esper.leyline.features import feature_names
from esper.tamiyo.adapter import AdapterError, TamiyoAdapter, trainable_share
from esper.tamiyo.agent_file import AgentFileError, load_agent, save_agent
from esper.tamiyo.core import LayoutPolicy, TamiyoCore, core_hash
from esper.tamiyo.parts import load_adapter, load_core, save_adapter, save_core
from esper.tolaria.builder import action_spec
from test_tamiyo_core import _batch, _walk_masks, _world


@pytest.fixture(scope="module")
def worlds():
    out = {}
    for name, preset in (("vision", "family"), ("text", "shakespeare-cpu")):
        world = _world(preset)
        spec = action_spec(world)
        out[name] = (spec, _batch(spec, _walk_masks(world, steps=30), 64, seed=1))
    return out


def _trained(core: TamiyoCore, spec, batch, domain: str, steps: int = 30, seed: int = 0) -> LayoutPolicy:
    """An adapter trained (core frozen) to push up the log-probability of the actions a random target picks."""
    torch.manual_seed(seed)
    policy = LayoutPolicy(core, spec, TamiyoAdapter(core, domain))
    features, mask = batch
    target = LayoutPolicy(TamiyoCore(core.hidden), spec)(features, mask, mode="greedy").actions
    opt = torch.optim.Adam(policy.adapter.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = -policy(features, mask, actions=target).logp.mean() + policy.value(features).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy


@torch.no_grad()  # as RLlib's inference and Serve decide (with autograd on, kernels may differ in the last bit)
def test_a_fresh_adapter_decides_exactly_as_the_bare_core(worlds):
    torch.manual_seed(0)
    core = TamiyoCore(64).requires_grad_(False)
    for domain, (spec, (features, mask)) in worlds.items():
        bare, adapted = LayoutPolicy(core, spec), LayoutPolicy(core, spec, TamiyoAdapter(core, domain))
        a, b = bare(features, mask, mode="greedy"), adapted(features, mask, mode="greedy")
        assert torch.equal(a.actions, b.actions) and torch.equal(a.logits, b.logits)
        assert torch.equal(bare.value(features), adapted.value(features))


def test_the_default_adapter_is_at_most_5_percent_of_the_core():
    """Rank 2 (the default) at PPO's default width 128 and above; a 64-wide core needs rank 1 for the bar."""
    for hidden, rank in ((128, 2), (256, 2), (64, 1)):
        core = TamiyoCore(hidden)
        share = trainable_share(TamiyoAdapter(core, "text", rank), core)
        assert 0.005 < share <= 0.05, (hidden, rank, share)


def test_training_an_adapter_changes_decisions_and_leaves_the_core_hash_identical(worlds):
    torch.manual_seed(0)
    core = TamiyoCore(64).requires_grad_(False)
    before = core_hash(core)
    spec, (features, mask) = worlds["text"]
    bare = LayoutPolicy(core, spec)(features, mask, mode="greedy")
    policy = _trained(core, spec, worlds["text"][1], "text")
    assert core_hash(core) == before
    assert all(p.grad is None for p in core.parameters())
    adapted = policy(features, mask, mode="greedy")
    assert not torch.equal(adapted.logits, bare.logits)
    assert (adapted.actions != bare.actions).any()  # it learned something the bare core does not do


def test_an_adapter_refuses_another_core_naming_both_hashes(worlds, tmp_path):
    torch.manual_seed(0)
    core, other = TamiyoCore(64), TamiyoCore(64)
    spec, _ = worlds["vision"]
    adapter = TamiyoAdapter(core, "vision")
    with pytest.raises(AdapterError, match=core_hash(core)[:12]):
        LayoutPolicy(other, spec, adapter)
    save_adapter(tmp_path / "adapter.pt", adapter)
    with pytest.raises(AdapterError, match=core_hash(other)[:12]):
        load_adapter(tmp_path / "adapter.pt", other)
    with pytest.raises(AdapterError, match="esper.core"):
        load_core(tmp_path / "adapter.pt")


def test_core_and_adapter_files_round_trip_and_an_altered_core_is_refused(worlds, tmp_path):
    torch.manual_seed(0)
    core = TamiyoCore(64)
    spec, (features, mask) = worlds["vision"]
    policy = _trained(core, spec, worlds["vision"][1], "vision", steps=5)
    save_core(tmp_path / "core.pt", core)
    save_adapter(tmp_path / "adapter.pt", policy.adapter)
    loaded = load_core(tmp_path / "core.pt")
    assert core_hash(loaded) == core_hash(core) and not any(p.requires_grad for p in loaded.parameters())
    again = LayoutPolicy(loaded, spec, load_adapter(tmp_path / "adapter.pt", loaded))
    with torch.no_grad():
        assert torch.equal(again(features, mask, mode="greedy").logits, policy(features, mask, mode="greedy").logits)
    payload = torch.load(tmp_path / "core.pt", weights_only=True)
    payload["state_dict"]["op_head.bias"] += 1.0
    torch.save(payload, tmp_path / "core.pt")
    with pytest.raises(AdapterError, match="hash"):
        load_core(tmp_path / "core.pt")


def test_reattaching_the_vision_adapter_reproduces_its_decisions_after_the_text_adapter(worlds, tmp_path):
    """One core, two domains: vision decisions saved in agent.pt are reproduced exactly after the text adapter
    has been attached, trained and used on the same core object."""
    torch.manual_seed(0)
    core = TamiyoCore(64).requires_grad_(False)
    (v_spec, (v_x, v_m)), (t_spec, t_batch) = worlds["vision"], worlds["text"]
    vision = _trained(core, v_spec, worlds["vision"][1], "vision", steps=10)
    save_agent(tmp_path / "vision.pt", vision, v_spec, feature_names(v_spec), config={})
    with torch.no_grad():
        reference = vision(v_x, v_m, mode="greedy")
    adapter = vision.detach()
    text = _trained(core, t_spec, t_batch, "text", steps=10, seed=1)
    with torch.no_grad():
        text(*t_batch, mode="greedy")
        vision.attach(adapter)
        again = vision(v_x, v_m, mode="greedy")
        assert torch.equal(again.actions, reference.actions) and torch.equal(again.logits, reference.logits)
        agent = load_agent(tmp_path / "vision.pt", expected_features=feature_names(v_spec))
        assert agent.manifest["network"]["adapter"]["domain"] == "vision"
        assert torch.equal(agent.net(v_x, v_m, mode="greedy").logits, reference.logits)


def test_an_agent_whose_adapter_names_another_core_is_refused(worlds, tmp_path):
    torch.manual_seed(0)
    core = TamiyoCore(64)
    spec, _ = worlds["vision"]
    save_agent(tmp_path / "agent.pt", LayoutPolicy(core, spec, TamiyoAdapter(core, "vision")), spec,
               feature_names(spec), config={})
    payload = torch.load(tmp_path / "agent.pt", weights_only=True)
    payload["manifest"]["network"]["adapter"]["core_hash"] = "0" * 64
    torch.save(payload, tmp_path / "agent.pt")
    with pytest.raises(AgentFileError, match="adapter 'vision' was trained on core 000000000000"):
        load_agent(tmp_path / "agent.pt")


def test_ppo_trains_only_the_adapter_on_a_frozen_core(tmp_path):
    """The RLlib module built from `ppo.frozen_core` holds the file's core; TamiyoPPOLearner hands Adam the
    adapter's parameters only, and a gradient step through RLlib moves the adapter, never the core."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from esper.leyline.experiment import load_config
    from esper.simic.config import TrainTamiyoConfig
    from esper.simic.env import spaces_for
    from esper.simic.ppo.algo import build_ppo_config, module_config
    from esper.simic.ppo.module import TamiyoPPOLearner, TamiyoRLModule
    from esper.runtime.resources import RunnerPlan
    from test_tamiyo_core import PRESETS

    torch.manual_seed(0)
    digest = save_core(tmp_path / "core.pt", TamiyoCore(32))
    cfg = load_config(PRESETS / "shakespeare-cpu.yaml", ["ppo.network=core", "ppo.hidden=32", "ppo.adapter_rank=1",
                                                         f"ppo.frozen_core={tmp_path / 'core.pt'}"], model=TrainTamiyoConfig)
    spec = action_spec(cfg.world)
    obs_space, act_space = spaces_for(spec)
    module_spec = RLModuleSpec(module_class=TamiyoRLModule, observation_space=obs_space, action_space=act_space,
                               model_config=module_config(cfg))
    learner = TamiyoPPOLearner(config=build_ppo_config(cfg, RunnerPlan(0, 1.0, 0.0, 1.0, 0.0)), module_spec=module_spec)
    learner.build()
    net = learner.module[DEFAULT_MODULE_ID].net
    assert core_hash(net.core) == digest and net.adapter.domain == "shakespeare-cpu"
    assert {id(p) for p in learner.get_parameters(learner.module[DEFAULT_MODULE_ID])} == {id(p) for p in net.adapter.parameters()}
    features, mask = _batch(spec, _walk_masks(cfg.world, steps=10), 32)
    out = learner.module[DEFAULT_MODULE_ID].forward_train(
        {Columns.OBS: {"features": features, "action_mask": mask}, Columns.ACTIONS: net(features, mask).actions})
    before = {k: v.clone() for k, v in net.adapter.state_dict().items()}
    # a policy and a value term, as PPO's loss has (every adapter delta then has a gradient)
    loss = -out[Columns.ACTION_DIST_INPUTS].clamp(min=-10).sum() / 1e3 + net.value(features).pow(2).mean()
    learner.apply_gradients(learner.compute_gradients({DEFAULT_MODULE_ID: loss}))
    assert core_hash(net.core) == digest
    assert any(not torch.equal(before[k], v) for k, v in net.adapter.state_dict().items())


def test_the_reattach_check_finds_the_reassembled_agent_identical_and_a_changed_adapter_not(tmp_path, worlds):
    """esper/study/reattach.py end to end on a tiny world: the vision agent rebuilt from core.pt + adapter.pt
    (after another domain's adapter has used the core) plays the same episode decision for decision; an adapter
    file with one weight changed does not pass as the same agent."""
    from _support import tiny_world

    from esper.simic.config import TrainTamiyoConfig
    from esper.study.reattach import reattach_check

    torch.manual_seed(0)
    core = TamiyoCore(32)
    world = tiny_world()
    spec, (t_spec, _) = action_spec(world), worlds["text"]
    config = TrainTamiyoConfig(world=world).model_dump(mode="json")
    for domain, s, seed in (("vision", spec, 1), ("text", t_spec, 2)):
        torch.manual_seed(seed)
        adapter = TamiyoAdapter(core, domain)
        with torch.no_grad():
            for p in adapter.parameters():
                p.normal_(0.0, 0.5)  # decisions that vary with what the agent sees
            adapter.deltas["op_head"].bias[1] += 3.0  # and that grow (not only WAIT)
        save_agent(tmp_path / f"{domain}.pt", LayoutPolicy(core, s, adapter), s, feature_names(s), config=config)
        save_adapter(tmp_path / f"{domain}-adapter.pt", adapter)
    save_core(tmp_path / "core.pt", core)
    args = (tmp_path / "vision.pt", tmp_path / "core.pt", tmp_path / "vision-adapter.pt", tmp_path / "text.pt")
    rows = reattach_check(*args, {"tiny": world}, [0])["tiny"]
    assert rows[0]["identical_episode"] and rows[0]["identical_decisions"] == rows[0]["decisions"] == world.trainer.epochs
    assert rows[0]["identical_logits"] == rows[0]["decisions"] and rows[0]["non_wait_decisions"] > 0
    payload = torch.load(tmp_path / "vision-adapter.pt", weights_only=True)
    payload["state_dict"]["deltas.op_head.bias"][1] -= 6.0  # one weight: this agent no longer grows
    torch.save(payload, tmp_path / "vision-adapter.pt")
    changed = reattach_check(*args, {"tiny": world}, [0])["tiny"]
    assert not changed[0]["identical_episode"] and changed[0]["identical_logits"] == 0


def test_decisions_without_gradients_follow_every_change_of_the_adapter(worlds):
    """Without gradients the policy decides on a cached core with the adapter merged in; an optimiser step or a
    load_state_dict (RLlib's weight sync) must be seen at once, and the cached path must equal the merged one."""
    torch.manual_seed(0)
    core = TamiyoCore(32).requires_grad_(False)
    spec, (features, mask) = worlds["text"]
    policy = LayoutPolicy(core, spec, TamiyoAdapter(core, "text"))
    other = _trained(core, spec, worlds["text"][1], "text", steps=10, seed=3)
    with torch.no_grad():
        before = policy(features, mask, mode="greedy").logits
        policy.adapter.load_state_dict(other.adapter.state_dict())
        after = policy(features, mask, mode="greedy").logits
    assert not torch.equal(before, after)
    with torch.no_grad():
        assert torch.equal(after, other(features, mask, mode="greedy").logits)
    merged = policy(features, mask, mode="greedy").logits  # with gradients: the functional path
    assert torch.allclose(after, merged, atol=1e-5, rtol=0)
    opt = torch.optim.SGD(policy.adapter.parameters(), lr=0.5)
    (-policy(features, mask, actions=policy(features, mask).actions).logp.mean()).backward()
    opt.step()
    with torch.no_grad():
        stepped = policy(features, mask, mode="greedy").logits
    assert not torch.equal(stepped, after)
    assert torch.allclose(stepped, policy(features, mask, mode="greedy").logits.detach(), atol=1e-5, rtol=0)
    assert "_fused" not in "".join(policy.state_dict())  # the cache is never saved
