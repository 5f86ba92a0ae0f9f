"""TamiyoPolicyNet (masked, factored, autoregressive heads) and the RLlib module around it: masked actions are
never sampled, greedy is deterministic, teacher forcing reproduces the sampler's log-probs, the log-prob is the
conditional masked log-softmax computed by hand, one-hot masks give no NaNs, and the RLModule's outputs agree
with RLlib's TorchMultiCategorical."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _support import tiny_model
from torch.nn import functional as F

from esper.leyline import ActionMasks, FactoredAction, Op, Stage
from esper.leyline.features import feature_size
from esper.tamiyo.policy import TamiyoPolicyNet, split_mask

N_SAMPLES = 20_000


def random_plane_masks(n_walks: int = 4, steps: int = 120, seed: int = 0) -> tuple[object, list[np.ndarray]]:
    """Flat masks of the distinct plane states met by random legal walks over a tiny model (no training)."""
    rng = np.random.default_rng(seed)
    seen: dict[bytes, np.ndarray] = {}
    spec = None
    for _ in range(n_walks):
        model = tiny_model()
        spec = model.action_spec
        for _ in range(steps):
            m = model.masks()
            flat = m.flat()
            seen.setdefault(flat.tobytes(), flat)
            op = int(rng.choice(np.flatnonzero(m.op)))
            slot = int(rng.choice(np.flatnonzero(m.slot[op])))
            _, bp, blend = m.head_masks(op, slot)
            model.apply(FactoredAction(Op(op), slot, int(rng.choice(np.flatnonzero(bp))), int(rng.choice(np.flatnonzero(blend)))))
            model.step_epoch()
    return spec, list(seen.values())


@pytest.fixture(scope="module")
def plane():
    spec, masks = random_plane_masks()
    return spec, masks


def make_net(spec, hidden: int = 32, adversarial: bool = False, seed: int = 0) -> TamiyoPolicyNet:
    torch.manual_seed(seed)
    net = TamiyoPolicyNet(feature_size(spec), spec.nvec, hidden=hidden)
    if adversarial:  # sharp heads with large biases: a leaking mask would be exploited at once
        with torch.no_grad():
            for head in (net.op_head, net.slot_head, net.blueprint_head, net.blend_head):
                head.weight.normal_(0.0, 5.0)
                head.bias.uniform_(-50.0, 50.0)
    return net


def batch(spec, masks: list[np.ndarray], n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, feature_size(spec), generator=gen).clamp(-5, 5)
    idx = torch.randint(0, len(masks), (n,), generator=gen)
    mask = torch.as_tensor(np.stack(masks))[idx]
    return features, mask


def assert_all_allowed(spec, mask: torch.Tensor, actions: torch.Tensor) -> None:
    mask_np, acts_np = mask.numpy(), actions.numpy()
    cache: dict[bytes, ActionMasks] = {}
    bad = []
    for row, a in zip(mask_np, acts_np):
        key = row.tobytes()
        m = cache.get(key) or cache.setdefault(key, ActionMasks.from_flat(spec, row))
        if not m.allows(FactoredAction.from_array(a)):
            bad.append((a.tolist(), row.astype(int).tolist()))
    assert not bad, f"{len(bad)} masked actions sampled, e.g. {bad[:3]}"


def test_random_walks_reach_varied_plane_states(plane):
    spec, masks = plane
    assert len(masks) >= 10
    decoded = [ActionMasks.from_flat(spec, m) for m in masks]
    for op in spec.ops:
        assert any(d.op[op] for d in decoded), f"{op.name} never legal in the walk"
        if op is not Op.WAIT:
            assert any(not d.op[op] for d in decoded), f"{op.name} always legal in the walk"


# ---------------------------------------------------------------------------------------------- sampling legality


@pytest.mark.parametrize("adversarial", [False, True], ids=["init", "adversarial"])
def test_sampled_actions_are_never_masked(plane, adversarial):
    spec, masks = plane
    net = make_net(spec, adversarial=adversarial)
    features, mask = batch(spec, masks, N_SAMPLES, seed=1)
    with torch.no_grad():
        out = net(features, mask, generator=torch.Generator().manual_seed(2))
    assert out.actions.shape == (N_SAMPLES, 4) and out.actions.dtype == torch.int64
    assert torch.isfinite(out.logp).all() and torch.isfinite(out.entropy).all()
    assert (out.logp <= 1e-6).all()
    assert_all_allowed(spec, mask, out.actions)
    # every op the masks allow does get sampled (the sampler is not stuck)
    ops = set(out.actions[:, 0].tolist())
    assert ops == {int(o) for o in spec.ops} or adversarial


@pytest.mark.parametrize("adversarial", [False, True], ids=["init", "adversarial"])
def test_greedy_is_deterministic_and_legal(plane, adversarial):
    spec, masks = plane
    net = make_net(spec, adversarial=adversarial)
    features, mask = batch(spec, masks, 2000, seed=3)
    with torch.no_grad():
        a = net(features, mask, mode="greedy")
        torch.manual_seed(12345)  # greedy must not depend on any RNG
        b = net(features, mask, mode="greedy")
    assert torch.equal(a.actions, b.actions)
    assert torch.equal(a.logp, b.logp)
    assert_all_allowed(spec, mask, a.actions)
    # greedy picks the arg-max of each conditioned head
    logits = torch.split(a.logits, list(spec.nvec), dim=-1)
    for head, lg in enumerate(logits):
        assert torch.equal(lg.argmax(-1), a.actions[:, head])


def test_sampling_is_reproducible_with_a_seeded_generator(plane):
    spec, masks = plane
    net = make_net(spec)
    features, mask = batch(spec, masks, 500, seed=4)
    with torch.no_grad():
        a = net(features, mask, generator=torch.Generator().manual_seed(9))
        b = net(features, mask, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.actions, b.actions)


# ---------------------------------------------------------------------------------------------- log-probs


def test_teacher_forcing_reproduces_the_samplers_logp(plane):
    spec, masks = plane
    net = make_net(spec)
    features, mask = batch(spec, masks, 4000, seed=5)
    with torch.no_grad():
        sampled = net(features, mask, generator=torch.Generator().manual_seed(6))
        forced = net(features, mask, actions=sampled.actions)
    assert torch.equal(forced.actions, sampled.actions)
    torch.testing.assert_close(forced.logp, sampled.logp, rtol=0, atol=1e-6)
    torch.testing.assert_close(forced.logits, sampled.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(forced.entropy, sampled.entropy, rtol=0, atol=1e-6)


def hand_logp(net: TamiyoPolicyNet, spec, features: torch.Tensor, flat_mask: np.ndarray, action: np.ndarray) -> float:
    """Σ over heads of log_softmax over the *legal* entries only (conditioned masks), in float64."""
    m = ActionMasks.from_flat(spec, flat_mask)
    n_op, n_slot, n_bp, n_blend = spec.nvec
    op, slot, bp, blend = (int(v) for v in action)
    with torch.no_grad():
        z = net.trunk(features[None])
        op_1h = F.one_hot(torch.tensor([op]), n_op).float()
        slot_1h = F.one_hot(torch.tensor([slot]), n_slot).float()
        raw = {
            "op": net.op_head(z)[0],
            "slot": net.slot_head(torch.cat([z, op_1h], -1))[0],
            "blueprint": net.blueprint_head(torch.cat([z, op_1h, slot_1h], -1))[0],
            "blend": net.blend_head(torch.cat([z, op_1h, slot_1h], -1))[0],
        }
    germ = op == Op.GERMINATE
    legal = {
        "op": m.op,
        "slot": m.slot[op],
        "blueprint": m.blueprint[slot] if germ else np.eye(n_bp, dtype=bool)[0],
        "blend": m.blend if germ else np.eye(n_blend, dtype=bool)[0],
    }
    taken = {"op": op, "slot": slot, "blueprint": bp, "blend": blend}
    total = 0.0
    for head in ("op", "slot", "blueprint", "blend"):
        idx = np.flatnonzero(legal[head])
        assert taken[head] in idx, f"{head} {taken[head]} is not legal"
        x = raw[head].double().numpy()[idx]
        log_z = np.log(np.sum(np.exp(x - x.max()))) + x.max()
        total += float(x[list(idx).index(taken[head])] - log_z)
    return total


@pytest.mark.parametrize("adversarial", [False, True], ids=["init", "adversarial"])
def test_logp_matches_a_hand_computation(plane, adversarial):
    spec, masks = plane
    net = make_net(spec, adversarial=adversarial)
    features, mask = batch(spec, masks, 400, seed=7)
    with torch.no_grad():
        out = net(features, mask, generator=torch.Generator().manual_seed(8))
    ops_seen = set()
    for i in range(features.shape[0]):
        expected = hand_logp(net, spec, features[i], mask[i].numpy(), out.actions[i].numpy())
        assert float(out.logp[i]) == pytest.approx(expected, abs=2e-4 if adversarial else 1e-5), i
        ops_seen.add(int(out.actions[i, 0]))
    assert int(Op.GERMINATE) in ops_seen  # the conditioned blueprint/blend heads were exercised


def test_heads_an_op_does_not_read_add_nothing(plane):
    """WAIT/ADVANCE/CULL: blueprint and blend are forced to 0 (log-prob 0, entropy 0 for those heads)."""
    spec, masks = plane
    net = make_net(spec)
    features, mask = batch(spec, masks, 3000, seed=10)
    with torch.no_grad():
        out = net(features, mask, generator=torch.Generator().manual_seed(11))
    not_germ = out.actions[:, 0] != int(Op.GERMINATE)
    assert not_germ.any()
    assert (out.actions[not_germ, 2] == 0).all() and (out.actions[not_germ, 3] == 0).all()
    waits = out.actions[:, 0] == int(Op.WAIT)
    assert (out.actions[waits, 1] == 0).all()
    heads = torch.split(out.logits, list(spec.nvec), dim=-1)
    for h in (2, 3):
        lp = F.log_softmax(heads[h][not_germ], -1)
        assert torch.allclose(lp[:, 0], torch.zeros(()), atol=1e-6)


# ---------------------------------------------------------------------------------------------- one-hot masks


def one_hot_mask(spec, op: Op, slot: int, bp: int, blend: int) -> np.ndarray:
    """Exactly one legal choice per head row."""
    n_op, n_slot, n_bp, n_blend = spec.nvec
    m = ActionMasks(
        op=np.eye(n_op, dtype=bool)[op],
        slot=np.stack([np.eye(n_slot, dtype=bool)[slot if o == op else 0] for o in range(n_op)]),
        blueprint=np.stack([np.eye(n_bp, dtype=bool)[bp] for _ in range(n_slot)]),
        blend=np.eye(n_blend, dtype=bool)[blend],
    )
    return m.flat()


@pytest.mark.parametrize("adversarial", [False, True], ids=["init", "adversarial"])
def test_one_hot_masks_give_no_nans(plane, adversarial):
    spec, _ = plane
    net = make_net(spec, adversarial=adversarial)
    cases = [(Op.WAIT, 0, 0, 0), (Op.GERMINATE, 2, 3, 5), (Op.GERMINATE, 0, 0, 0), (Op.ADVANCE, 1, 0, 0), (Op.CULL, 2, 0, 0)]
    masks = torch.as_tensor(np.stack([one_hot_mask(spec, *c) for c in cases]))
    features = torch.randn(len(cases), feature_size(spec)) * 3
    for mode in ("sample", "greedy"):
        net.zero_grad()
        out = net(features, masks, mode=mode, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.logits).all() and not torch.isnan(out.logits).any()
        assert torch.isfinite(out.logp).all() and torch.isfinite(out.entropy).all()
        expected = torch.tensor([[int(o), s, b if o is Op.GERMINATE else 0, l if o is Op.GERMINATE else 0]
                                 for o, s, b, l in cases])
        assert torch.equal(out.actions, expected)
        torch.testing.assert_close(out.logp, torch.zeros(len(cases)), rtol=0, atol=1e-6)
        torch.testing.assert_close(out.entropy, torch.zeros(len(cases)), rtol=0, atol=1e-6)
        (out.logp.sum() + out.entropy.sum()).backward()  # PPO's loss: gradients must stay finite too
        for name, p in net.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), name


def test_all_legal_mask_is_plain_softmax(plane):
    spec, _ = plane
    net = make_net(spec)
    mask = torch.ones(3, spec.mask_size)
    features = torch.randn(3, feature_size(spec))
    with torch.no_grad():
        out = net(features, mask, mode="greedy")
        raw_op = net.op_head(net.trunk(features))
    torch.testing.assert_close(out.logits[:, : spec.nvec[0]], raw_op)


def test_split_mask_inverts_flat(plane):
    spec, masks = plane
    flat = torch.as_tensor(np.stack(masks[:7]))
    op, slot, bp, blend = split_mask(flat, spec.nvec)
    for i in range(flat.shape[0]):
        m = ActionMasks.from_flat(spec, masks[i])
        assert np.array_equal(op[i].numpy() > 0.5, m.op)
        assert np.array_equal(slot[i].numpy() > 0.5, m.slot)
        assert np.array_equal(bp[i].numpy() > 0.5, m.blueprint)
        assert np.array_equal(blend[i].numpy() > 0.5, m.blend)


# ---------------------------------------------------------------------------------------------- the RLModule


@pytest.fixture(scope="module")
def rl_setup(plane):
    from esper.world import WorldConfig
    from esper.simic.env import EsperEnv
    from esper.simic.ppo.module import TamiyoRLModule

    env = EsperEnv(WorldConfig.model_validate({
        "data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
        "trainer": {"epochs": 5, "batch_size": 32, "max_batches_per_epoch": 2}, "val_images": 60,
    }))
    torch.manual_seed(0)
    module = TamiyoRLModule(observation_space=env.observation_space, action_space=env.action_space,
                            model_config={"hidden": 32})
    spec, masks = plane
    assert spec == env.action_spec
    obs, _ = env.reset(seed=0)
    B = 64
    features, mask = batch(spec, masks, B, seed=20)
    features[0] = torch.as_tensor(obs["features"])  # one real observation in the batch
    mask[0] = torch.as_tensor(obs["action_mask"])
    return module, env, spec, features, mask


def test_rl_module_forward_passes_return_the_right_keys_and_shapes(rl_setup):
    from ray.rllib.core.columns import Columns

    module, env, spec, features, mask = rl_setup
    B, n_logits = features.shape[0], sum(spec.nvec)
    batch_in = {Columns.OBS: {"features": features, "action_mask": mask}}
    with torch.no_grad():
        explore = module.forward_exploration(batch_in)
        infer = module.forward_inference(batch_in)
    for out in (explore, infer):
        assert {Columns.ACTIONS, Columns.ACTION_DIST_INPUTS, Columns.ACTION_LOGP} <= set(out)
        assert out[Columns.ACTIONS].shape == (B, 4)
        assert out[Columns.ACTION_DIST_INPUTS].shape == (B, n_logits)
        assert out[Columns.ACTION_LOGP].shape == (B,)
        assert_all_allowed(spec, mask, out[Columns.ACTIONS])
        for row in out[Columns.ACTIONS].numpy():
            assert env.action_space.contains(row.astype(env.action_space.dtype))

    train_in = {Columns.OBS: {"features": features, "action_mask": mask}, Columns.ACTIONS: explore[Columns.ACTIONS]}
    train = module.forward_train(train_in)
    assert Columns.ACTION_DIST_INPUTS in train
    assert train[Columns.ACTION_DIST_INPUTS].shape == (B, n_logits)
    assert train[Columns.ACTION_DIST_INPUTS].requires_grad  # training pass keeps the graph

    values = module.compute_values(train_in)
    assert values.shape == (B,)


def test_rl_module_inference_is_greedy(rl_setup):
    from ray.rllib.core.columns import Columns

    module, _, _, features, mask = rl_setup
    batch_in = {Columns.OBS: {"features": features, "action_mask": mask}}
    with torch.no_grad():
        a = module.forward_inference(batch_in)[Columns.ACTIONS]
        b = module.forward_inference(batch_in)[Columns.ACTIONS]
        greedy = module.net(features, mask, mode="greedy").actions
    assert torch.equal(a, b) and torch.equal(a, greedy)
    # RLlib's deterministic version of the inference distribution picks the same actions
    dist = module.get_inference_action_dist_cls().from_logits(module.forward_inference(batch_in)[Columns.ACTION_DIST_INPUTS])
    assert torch.equal(dist.to_deterministic().sample(), a)


def test_compute_values_does_not_mutate_the_batch(rl_setup):
    from ray.rllib.core.columns import Columns

    module, _, _, features, mask = rl_setup
    actions = torch.zeros(features.shape[0], 4, dtype=torch.int64)
    batch_in = {Columns.OBS: {"features": features.clone(), "action_mask": mask.clone()}, Columns.ACTIONS: actions}
    before = copy.deepcopy(batch_in)
    ids = {k: id(v) for k, v in batch_in.items()}
    values = module.compute_values(batch_in)
    assert set(batch_in) == set(before) and set(batch_in[Columns.OBS]) == set(before[Columns.OBS])
    assert {k: id(v) for k, v in batch_in.items()} == ids
    for key in ("features", "action_mask"):
        assert torch.equal(batch_in[Columns.OBS][key], before[Columns.OBS][key])
    assert torch.equal(batch_in[Columns.ACTIONS], before[Columns.ACTIONS])
    assert Columns.VF_PREDS not in batch_in
    torch.testing.assert_close(values, module.net.value(features))


def test_train_distribution_logp_equals_exploration_logp(rl_setup):
    from ray.rllib.core.columns import Columns

    module, _, spec, features, mask = rl_setup
    batch_in = {Columns.OBS: {"features": features, "action_mask": mask}}
    with torch.no_grad():
        explore = module.forward_exploration(batch_in)
    train = module.forward_train({**batch_in, Columns.ACTIONS: explore[Columns.ACTIONS]})
    dist = module.get_train_action_dist_cls().from_logits(train[Columns.ACTION_DIST_INPUTS])
    logp = dist.logp(explore[Columns.ACTIONS])
    torch.testing.assert_close(logp.detach(), explore[Columns.ACTION_LOGP], rtol=0, atol=1e-5)
    # the entropy RLlib computes from those inputs is the policy's conditional entropy, and finite
    ent = dist.entropy()
    assert torch.isfinite(ent).all()
    with torch.no_grad():
        forced = module.net(features, mask, actions=explore[Columns.ACTIONS])
    torch.testing.assert_close(ent.detach(), forced.entropy, rtol=0, atol=1e-5)
    # gradients flow back from the logp into the network
    logp.sum().backward()
    assert module.net.op_head.weight.grad is not None and torch.isfinite(module.net.op_head.weight.grad).all()
