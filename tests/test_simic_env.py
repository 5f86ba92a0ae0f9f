"""The Simic gymnasium env: API conformance, observation bounds, mask soundness, invalid actions, episode length,
seeding and config validation. Everything runs on tiny synthetic worlds (no Ray, no network)."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pydantic
import pytest
from gymnasium.utils.env_checker import check_env

from esper.leyline import ActionMasks, FactoredAction, Op, Stage
from esper.leyline.features import feature_names
from esper.world import WorldConfig
from esper.simic.env import EsperEnv

TINY_WORLD = {
    "data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
    "trainer": {"epochs": 5, "batch_size": 32, "max_batches_per_epoch": 2},
    "val_images": 60,
}
# Cheaper still, with long episodes, for the many-decision mask-soundness run (the Governor is off: a rollback
# would only end the episode early; the masks after restore are covered by the Governor's own tests).
CHEAP_WORLD = {
    "data": {"source": "synthetic", "limit": 60, "val_fraction": 0.2},
    "trainer": {"epochs": 50, "batch_size": 4, "max_batches_per_epoch": 1, "augment": False},
    "governor": {"enabled": False},
    "val_images": 10,
}


@pytest.fixture(scope="module")
def env() -> EsperEnv:
    return EsperEnv(WorldConfig.model_validate(TINY_WORLD))


def legal_random_action(spec, flat_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform head by head over what the observation's flat mask allows."""
    m = ActionMasks.from_flat(spec, flat_mask)
    op = int(rng.choice(np.flatnonzero(m.op)))
    slot = int(rng.choice(np.flatnonzero(m.slot[op])))
    _, bp_mask, blend_mask = m.head_masks(op, slot)
    bp = int(rng.choice(np.flatnonzero(bp_mask)))
    blend = int(rng.choice(np.flatnonzero(blend_mask)))
    return np.array([op, slot, bp, blend], dtype=np.int64)


def assert_obs_ok(env: EsperEnv, obs: dict) -> None:
    assert env.observation_space.contains(obs), {k: (v.dtype, v.shape, v.min(), v.max()) for k, v in obs.items()}
    # the mask in the observation is the plane's current mask (what step() will judge the action by)
    np.testing.assert_array_equal(obs["action_mask"], env.model.masks().flat())


# ---------------------------------------------------------------------------------------------- gymnasium API


def test_check_env_passes(env):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_env(env, skip_render_check=True)


def test_spaces_match_the_action_spec(env):
    spec = env.action_spec
    assert tuple(env.action_space.nvec) == spec.nvec
    assert env.observation_space["action_mask"].shape == (spec.mask_size,)
    assert env.observation_space["features"].dtype == np.float32


def test_observation_in_space_after_reset_and_steps(env):
    rng = np.random.default_rng(1)
    obs, info = env.reset(seed=11)
    assert "episode_seed" in info
    assert_obs_ok(env, obs)
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(legal_random_action(env.action_spec, obs["action_mask"], rng))
        assert_obs_ok(env, obs)
        assert isinstance(reward, float) and np.isfinite(reward)
        assert truncated is False
        done = terminated or truncated


def test_episode_ends_after_trainer_epochs_steps(env):
    env.reset(seed=3)
    epochs = env.world.trainer.epochs
    for t in range(epochs):
        _, _, terminated, truncated, info = env.step(np.zeros(4, dtype=np.int64))  # WAIT
        assert not info["rolled_back"]
        assert terminated is (t == epochs - 1), f"step {t}: terminated={terminated}"
        assert not truncated
    assert env.trainer.epoch == epochs
    assert info["counts"]["wait"] == epochs


def test_reset_with_the_same_seed_is_reproducible(env):
    obs_a, info_a = env.reset(seed=1234)
    a_steps = [env.step(np.zeros(4, dtype=np.int64)) for _ in range(2)]
    obs_b, info_b = env.reset(seed=1234)
    b_steps = [env.step(np.zeros(4, dtype=np.int64)) for _ in range(2)]
    assert info_a == info_b
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_b[key])
    for (oa, ra, *_), (ob, rb, *_) in zip(a_steps, b_steps):
        assert ra == rb
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])
    other, info_c = env.reset(seed=1235)
    assert info_c["episode_seed"] != info_a["episode_seed"]


def test_step_before_reset_fails_clearly():
    fresh = EsperEnv(WorldConfig.model_validate(CHEAP_WORLD))
    with pytest.raises(AssertionError, match="reset"):
        fresh.step(np.zeros(4, dtype=np.int64))


# ---------------------------------------------------------------------------------------------- invalid actions


def test_illegal_action_runs_as_wait_counted_and_penalised(env):
    obs, _ = env.reset(seed=5)
    masks = ActionMasks.from_flat(env.action_spec, obs["action_mask"])
    cull = FactoredAction(Op.CULL, slot=0)
    assert all(r.stage is Stage.DORMANT for r in env.model.reports())
    assert not masks.allows(cull), "CULL on a dormant slot must be masked"
    stages_before = [r.stage for r in env.model.reports()]

    _, reward, _, _, info = env.step(cull.as_array())
    terms = info["reward_terms"]
    assert info["op"] == "WAIT"
    assert info["counts"]["invalid"] == 1
    assert info["counts"]["wait"] == 1 and info["counts"]["cull"] == 0 and info["counts"]["culled"] == 0
    assert [r.stage for r in env.model.reports()] == stages_before  # nothing was executed
    assert terms["invalid"] == pytest.approx(-env.world.reward.invalid_action_penalty)
    assert terms["action_cost"] == 0.0  # charged as the WAIT it became, not as a CULL
    assert reward == pytest.approx(sum(terms.values()), abs=1e-12)

    # a legal action afterwards is not penalised, and the invalid count stays where it was
    _, _, _, _, info = env.step(np.zeros(4, dtype=np.int64))
    assert info["reward_terms"]["invalid"] == 0.0
    assert info["counts"]["invalid"] == 1


@pytest.mark.parametrize("action", [
    [int(Op.WAIT), 1, 0, 0],  # WAIT with a non-zero irrelevant head
    [int(Op.ADVANCE), 0, 0, 0],  # nothing to advance at the start
    [int(Op.GERMINATE), 2, 5, 0],  # conv_heavy is not offered in block3 of the tiny host
])
def test_other_masked_actions_are_invalid(env, action):
    env.reset(seed=6)
    masks = env.model.masks()
    assert not masks.allows(FactoredAction.from_array(action))
    _, _, _, _, info = env.step(np.array(action, dtype=np.int64))
    assert info["counts"]["invalid"] == 1 and info["op"] == "WAIT"
    assert info["reward_terms"]["invalid"] == pytest.approx(-env.world.reward.invalid_action_penalty)


# ---------------------------------------------------------------------------------------------- mask soundness


def test_masks_are_sound_under_random_legal_play():
    """≥ 2,000 decisions sampled uniformly from the observation's mask: none is ever judged invalid."""
    env = EsperEnv(WorldConfig.model_validate(CHEAP_WORLD))
    rng = np.random.default_rng(0)
    decisions, episodes = 0, 0
    ops, stages = Counter(), Counter()
    while decisions < 2000:
        obs, _ = env.reset(seed=episodes)
        episodes += 1
        done = False
        while not done:
            assert_obs_ok(env, obs)
            action = legal_random_action(env.action_spec, obs["action_mask"], rng)
            obs, _, terminated, truncated, info = env.step(action)
            decisions += 1
            assert info["counts"]["invalid"] == 0, f"episode {episodes - 1}: legal action {action} judged invalid"
            assert info["reward_terms"]["invalid"] == 0.0
            assert info["op"] == Op(int(action[0])).name  # executed as chosen
            ops[info["op"]] += 1
            stages.update(r.stage.name for r in env.model.reports())
            done = terminated or truncated
    assert decisions >= 2000 and episodes >= 2
    # the walk really explored the lifecycle (otherwise "never invalid" would be cheap)
    assert all(ops[o.name] > 0 for o in env.action_spec.ops), ops
    for stage in ("GERMINATED", "TRAINING", "BLENDING", "HOLDING", "EMBARGOED"):
        assert stages[stage] > 0, stages


# ---------------------------------------------------------------------------------------------- config


def test_typo_in_config_is_a_validation_error_naming_the_field():
    with pytest.raises(pydantic.ValidationError) as err:
        EsperEnv({"trainer": {"epoch": 3}})
    locs = [e["loc"] for e in err.value.errors()]
    assert ("trainer", "epoch") in locs
    assert "epoch" in str(err.value)


def test_env_accepts_a_plain_dict_config():
    e = EsperEnv(CHEAP_WORLD)
    assert e.world.trainer.epochs == CHEAP_WORLD["trainer"]["epochs"]
    assert e.world.val_images == 10


def test_a_compute_budget_episode_ends_on_its_flops_and_shows_them_to_the_controller():
    """trainer.budget_host_epochs ends an episode on FLOPs, not epochs: the bare host gets its budgeted epochs, a
    seed makes epochs dearer and the episode shorter. The observation carries the share of the budget spent and
    the seeds' extra cost per sample; the compute rent adds up to λ_c × the share spent."""
    world = dict(TINY_WORLD, trainer=dict(TINY_WORLD["trainer"], epochs=8, budget_host_epochs=4),
                 reward={"compute_rent_lambda": 0.5}, kasmina={"gate_profile": "permissive", "lifecycle": "graft"})
    env = EsperEnv(WorldConfig.model_validate(world))
    names = feature_names(env.action_spec)
    spent_at, extra_at = names.index("budget_spent"), names.index("excess_flops_ratio")

    def play(first_action) -> tuple[int, list, float]:
        obs, _ = env.reset(seed=0)
        seen, rent, action, done = [obs["features"]], 0.0, first_action, False
        while not done:
            obs, _, terminated, truncated, info = env.step(action)
            seen.append(obs["features"])
            rent += info["reward_terms"]["compute_rent"]
            action, done = np.zeros(4, dtype=np.int64), terminated or truncated  # WAIT
        return len(seen) - 1, seen, rent, info

    steps, seen, rent, info = play(np.zeros(4, dtype=np.int64))
    assert steps == 4 and seen[0][spent_at] == 0.0 and seen[-1][spent_at] == pytest.approx(1.0)
    assert all(f[extra_at] == 0.0 for f in seen) and rent == pytest.approx(-0.5)
    spec = env.action_spec
    grow = np.array([int(Op.GERMINATE), spec.slots.index("block3"), spec.blueprints.index("conv_light"), 0])
    steps, seen, rent, info = play(grow)
    assert info["counts"]["invalid"] == 0 and env.model.slot("block3").stage is Stage.FOSSILIZED
    assert steps < 4, "a grafted seed makes every epoch dearer: the budget runs out sooner"
    assert max(f[extra_at] for f in seen) > 0 and info["budget_spent"] >= 1.0
    assert rent == pytest.approx(-0.5 * info["budget_spent"])
