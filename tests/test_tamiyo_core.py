"""The layout-free Tamiyo core: one set of weights decides legally in the family's conv world and the text world;
its size does not depend on the layout; teacher forcing reproduces the sampler; its hash names its weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from esper.leyline import FactoredAction, Op
from esper.leyline.experiment import load_config
from esper.leyline.features import GLOBAL_FEATURES, encode, feature_size, slot_features
from esper.simic.config import TrainTamiyoConfig
from esper.tamiyo.core import SLOT_INPUT, TamiyoCore, core_hash, describe_layout, split_features
from esper.tamiyo.policy import TamiyoPolicyNet
from esper.tolaria.builder import action_spec, build_model
from _support import signals_at
from test_policy import assert_all_allowed

PRESETS = Path(__file__).parent.parent / "experiments" / "presets"


def _world(name: str, overrides: list[str] | None = None):
    return load_config(PRESETS / f"{name}.yaml", overrides or [], model=TrainTamiyoConfig).world


def _walk_masks(world, steps: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Flat masks met by a random legal walk over the world's plane (no training)."""
    rng = np.random.default_rng(seed)
    model, seen = build_model(world), {}
    for _ in range(steps):
        m = model.masks()
        seen.setdefault(m.flat().tobytes(), m.flat())
        op = int(rng.choice(np.flatnonzero(m.op)))
        slot = int(rng.choice(np.flatnonzero(m.slot[op])))
        _, bp, blend = m.head_masks(op, slot)
        model.apply(FactoredAction(Op(op), slot, int(rng.choice(np.flatnonzero(bp))), int(rng.choice(np.flatnonzero(blend)))))
        model.step_epoch()
    return list(seen.values())


def _batch(spec, masks, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, feature_size(spec), generator=gen).clamp(-5, 5)
    idx = torch.randint(0, len(masks), (n,), generator=gen)
    return features, torch.as_tensor(np.stack(masks))[idx]


@pytest.fixture(scope="module")
def worlds():
    return {"family": _world("family"), "text": _world("shakespeare-cpu")}


def test_one_core_decides_legally_in_the_conv_and_the_text_world(worlds):
    torch.manual_seed(0)
    core = TamiyoCore(hidden=32)
    before = core_hash(core)
    specs = {name: action_spec(w) for name, w in worlds.items()}
    assert (len(specs["family"].slots), len(specs["text"].slots)) == (3, 2)
    assert len(specs["text"].blueprints) == 5
    for name, world in worlds.items():
        spec, layout = specs[name], describe_layout(specs[name])
        features, mask = _batch(spec, _walk_masks(world), 3000)
        with torch.no_grad():
            out = core(features, mask, layout)
        assert out.actions.shape == (3000, 4) and torch.isfinite(out.logp).all()
        assert_all_allowed(spec, mask, out.actions)
        used = set(out.actions[:, 0].tolist())
        assert Op.GERMINATE in used and Op.WAIT in used, f"{name}: the sampler reaches more than one op"
        assert core.value(features[:5], layout).shape == (5,)
    assert core_hash(core) == before, "deciding does not touch the core"


def test_the_core_is_the_same_size_whatever_the_layout_while_the_flat_policy_is_not(worlds):
    core = TamiyoCore(hidden=32)
    size = sum(p.numel() for p in core.parameters())
    family = worlds["family"]
    wider = family.model_copy(update={"kasmina": family.kasmina.model_copy(
        update={"blueprints": [*family.kasmina.blueprints, "depthwise", "attention"]})})
    flat_sizes = set()
    for world in (family, wider, worlds["text"]):
        spec = action_spec(world)
        features, mask = _batch(spec, _walk_masks(world, steps=10), 64)
        with torch.no_grad():
            core(features, mask, describe_layout(spec))  # the same weights read every layout
        flat_sizes.add(sum(p.numel() for p in TamiyoPolicyNet(feature_size(spec), spec.nvec, hidden=32).parameters()))
    assert sum(p.numel() for p in core.parameters()) == size
    assert len(flat_sizes) == 3, "the flat policy's size follows the layout (what the core removes)"


def test_teacher_forcing_reproduces_the_samplers_log_probs_and_greedy_is_deterministic(worlds):
    torch.manual_seed(1)
    core = TamiyoCore(hidden=32)
    spec = action_spec(worlds["text"])
    layout = describe_layout(spec)
    features, mask = _batch(spec, _walk_masks(worlds["text"]), 256, seed=3)
    with torch.no_grad():
        sampled = core(features, mask, layout, generator=torch.Generator().manual_seed(0))
        forced = core(features, mask, layout, actions=sampled.actions)
        greedy = [core(features, mask, layout, mode="greedy").actions for _ in range(2)]
    assert torch.allclose(forced.logp, sampled.logp, atol=1e-6)
    assert torch.equal(greedy[0], greedy[1])


def test_split_features_reads_the_layout_encode_writes(worlds):
    spec = action_spec(worlds["family"])
    model = build_model(worlds["family"])
    model.germinate(spec.slots[1], spec.blueprints[2], tempo=spec.tempos[0], curve=spec.curves[0].value)
    flat = torch.as_tensor(encode(spec, signals_at(), model.reports()))[None]
    g, own, onehot = split_features(flat, spec)
    n_own, n_bp = len(slot_features(spec)), len(spec.blueprints)
    assert g.shape == (1, len(GLOBAL_FEATURES)) and own.shape == (1, 3, SLOT_INPUT)
    for i in range(3):  # each slot's block of the flat vector: its own features, then its blueprint one-hot
        start = len(GLOBAL_FEATURES) + i * (n_own + n_bp)
        assert torch.equal(own[0, i, :n_own], flat[0, start:start + n_own])
    assert onehot[0, 1].tolist() == [0.0, 0.0, 1.0] and onehot[0, 0].sum() == 0
    assert torch.all(own[0, :, n_own:] == 0), "a layout without audits reads zeros in the audit features"


def test_the_core_hash_names_its_weights_and_survives_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(2)
    core = TamiyoCore(hidden=16)
    path = tmp_path / "core.pt"
    torch.save({"hidden": core.hidden, "hash": core_hash(core), "state_dict": core.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    again = TamiyoCore(hidden=saved["hidden"])
    again.load_state_dict(saved["state_dict"])
    assert core_hash(again) == saved["hash"] == core_hash(core)
    with torch.no_grad():
        next(again.parameters()).view(-1)[0] += 1e-3
    assert core_hash(again) != saved["hash"]


# ------------------------------------------------------------------------------------------ wired in
def test_the_rl_module_runs_the_core_when_ppo_network_is_core(worlds):
    from ray.rllib.core.columns import Columns

    from esper.simic.env import spaces_for
    from esper.simic.ppo.algo import module_config
    from esper.simic.ppo.module import TamiyoRLModule
    from esper.tamiyo.core import LayoutPolicy

    cfg = load_config(PRESETS / "shakespeare-cpu.yaml", ["ppo.network=core", "ppo.hidden=32"], model=TrainTamiyoConfig)
    spec = action_spec(cfg.world)
    obs_space, act_space = spaces_for(spec)
    torch.manual_seed(0)
    module = TamiyoRLModule(observation_space=obs_space, action_space=act_space, model_config=module_config(cfg))
    assert isinstance(module.net, LayoutPolicy) and module.net.layout.spec == spec
    features, mask = _batch(spec, _walk_masks(cfg.world), 128)
    batch = {Columns.OBS: {"features": features, "action_mask": mask}}
    with torch.no_grad():
        out = module.forward_exploration(batch)
        trained = module.forward_train({**batch, Columns.ACTIONS: out[Columns.ACTIONS]})
        values = module.compute_values(batch)
    assert_all_allowed(spec, mask, out[Columns.ACTIONS])
    assert trained[Columns.ACTION_DIST_INPUTS].shape == (128, sum(spec.nvec)) and values.shape == (128,)
    dist = module.get_train_action_dist_cls().from_logits(trained[Columns.ACTION_DIST_INPUTS])
    assert torch.allclose(dist.logp(out[Columns.ACTIONS]), out[Columns.ACTION_LOGP], atol=1e-5)


def test_a_core_agent_file_round_trips_and_a_changed_core_is_refused(tmp_path, worlds):
    from esper.leyline.features import feature_names
    from esper.tamiyo.agent_file import AgentFileError, load_agent, save_agent
    from esper.tamiyo.core import LayoutPolicy

    spec = action_spec(worlds["family"])
    torch.manual_seed(4)
    net = LayoutPolicy(TamiyoCore(hidden=16), spec)
    path = tmp_path / "agent.pt"
    save_agent(path, net, spec, feature_names(spec), config={})
    agent = load_agent(path, expected_features=feature_names(spec))
    assert isinstance(agent.net, LayoutPolicy) and agent.manifest["network"]["core_hash"] == core_hash(net.core)
    features, mask = _batch(spec, _walk_masks(worlds["family"], steps=10), 200)
    with torch.no_grad():
        assert torch.equal(agent.net(features, mask, mode="greedy").actions, net(features, mask, mode="greedy").actions)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["core.op_head.bias"] += 1.0
    torch.save(payload, path)
    with pytest.raises(AgentFileError, match="hash"):
        load_agent(path)


def test_ppo_network_is_checked_at_start_up():
    from esper.leyline.experiment import ConfigError

    with pytest.raises(ConfigError, match="ppo.network"):
        load_config(None, ["ppo.network=transformer"], model=TrainTamiyoConfig)
