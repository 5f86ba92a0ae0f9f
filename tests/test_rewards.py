"""The reward, term by term (compute_reward), the rent base against a real model's parameters, and the
potential-based shaping telescoping over real and synthetic episodes."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
from _support import advance_to, tiny_model

from esper.leyline import ActionMasks, Op, SlotReport, Stage
from esper.simic.rewards import RewardConfig
from esper.world import WorldConfig
from esper.simic.env import EsperEnv
from esper.simic.rewards import REWARD_TERMS, RewardStep, compute_reward, potential

TINY_WORLD = {
    "data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
    "trainer": {"epochs": 5, "batch_size": 32, "max_batches_per_epoch": 2},
    "val_images": 60,
}

# Every weight distinct and non-zero, so a term picking up the wrong weight shows.
CFG = RewardConfig(acc_weight=2.0, pbrs_weight=0.3, gamma=0.9, rent_lambda=0.07, germinate_cost=0.011,
                   advance_cost=0.013, cull_cost=0.017, terminal_weight=1.5, death_penalty=0.8,
                   invalid_action_penalty=0.06, compute_rent_lambda=0.019)


class Terms(dict):
    """compute_reward's signed terms, readable as attributes; `total` is the reward."""

    __getattr__ = dict.__getitem__

    @property
    def total(self) -> float:
        return sum(self.values())


def step_terms(cfg: RewardConfig = CFG, **overrides) -> Terms:
    kw = dict(metric_before=0.40, metric_after=0.40, phi_before=0.0, phi_after=0.0, excess_ratio=0.0, episode_steps=10,
              step_flops=0.0, episode_flops=1e12, op=Op.WAIT, terminal=False, rolled_back=False, invalid=False)
    kw.update(overrides)
    return Terms(compute_reward(cfg, RewardStep(**kw)))


# ---------------------------------------------------------------------------------------------- each term


def test_neutral_step_is_worth_nothing():
    t = step_terms()
    assert t == dict.fromkeys(REWARD_TERMS, 0.0)
    assert t.total == 0.0


@pytest.mark.parametrize("before,after", [(0.40, 0.45), (0.50, 0.30), (0.0, 1.0), (0.25, 0.25)])
def test_metric_term_is_weighted_delta(before, after):
    t = step_terms(metric_before=before, metric_after=after)
    assert t.metric == pytest.approx(CFG.acc_weight * (after - before), abs=1e-15)
    assert t.total == pytest.approx(t.metric, abs=1e-15)  # nothing else moves


@pytest.mark.parametrize("ratio,steps", [(0.0, 10), (0.3, 10), (1.7, 16), (0.25, 1)])
def test_rent_is_lambda_ratio_over_episode_length(ratio, steps):
    t = step_terms(excess_ratio=ratio, episode_steps=steps)
    assert t.rent == pytest.approx(-CFG.rent_lambda * ratio / steps, abs=1e-15)  # a cost: negative
    assert t.total == pytest.approx(t.rent, abs=1e-15)
    # paid every step of an episode at a constant ratio, it sums to λ·ratio (the per-episode rent)
    assert sum(step_terms(excess_ratio=ratio, episode_steps=steps).rent for _ in range(steps)) == pytest.approx(
        -CFG.rent_lambda * ratio)


@pytest.mark.parametrize("spent", [0.0, 5e10, 2.5e11])
def test_compute_rent_is_lambda_times_the_steps_share_of_the_budget(spent):
    t = step_terms(step_flops=spent, episode_flops=1e12)
    assert t.compute_rent == pytest.approx(-CFG.compute_rent_lambda * spent / 1e12, abs=1e-15)
    assert t.total == pytest.approx(t.compute_rent, abs=1e-15)


def test_rent_base_matches_the_real_models_parameters():
    """excess_ratio = (P_fossilized + P_active) / P_host, counted here straight from the modules."""
    model = tiny_model()
    spec = model.action_spec
    names = list(spec.slots)
    host = sum(p.numel() for p in model.host.parameters())
    assert model.param_counts().excess_ratio == 0.0

    model.germinate(names[0], "conv_light", 3, "linear")  # live (GERMINATED)
    model.germinate(names[1], "bottleneck", 3, "linear")
    advance_to(model, names[1], Stage.FOSSILIZED)  # fossilized
    model.germinate(names[2], "norm", 3, "linear")
    model.cull(names[2])  # culled: costs nothing any more

    live = sum(p.numel() for p in model.slot(names[0]).seed.parameters())
    fossil = sum(p.numel() for p in model.slot(names[1]).seed.parameters())
    assert live > 0 and fossil > 0
    pc = model.param_counts()
    assert (pc.host, pc.active_seeds, pc.fossilized) == (host, live, fossil)
    expected_ratio = (fossil + live) / host
    assert pc.excess_ratio == pytest.approx(expected_ratio, rel=1e-12)

    t = step_terms(excess_ratio=pc.excess_ratio, episode_steps=8)
    assert t.rent == pytest.approx(-CFG.rent_lambda * expected_ratio / 8, rel=1e-12)


@pytest.mark.parametrize("op,cost", [(Op.WAIT, 0.0), (Op.GERMINATE, CFG.germinate_cost),
                                     (Op.ADVANCE, CFG.advance_cost), (Op.CULL, CFG.cull_cost)])
def test_action_cost_per_op(op, cost):
    t = step_terms(op=op)
    assert t.action_cost == -cost
    assert t.total == pytest.approx(-cost, abs=1e-15)


def test_terminal_term_only_at_the_terminal_step():
    mid = step_terms(metric_before=0.5, metric_after=0.6, terminal=False)
    end = step_terms(metric_before=0.5, metric_after=0.6, terminal=True)
    assert mid.terminal == 0.0
    assert end.terminal == pytest.approx(CFG.terminal_weight * 0.6)
    assert end.metric == mid.metric  # the Δmetric term is paid either way
    assert end.total - mid.total == pytest.approx(end.terminal)


def test_death_penalty_on_rollback_replaces_the_terminal_term():
    rb = step_terms(metric_before=0.5, metric_after=0.3, rolled_back=True)
    assert rb.death == -CFG.death_penalty
    assert rb.terminal == 0.0
    both = step_terms(metric_before=0.5, metric_after=0.3, rolled_back=True, terminal=True)
    assert both.death == -CFG.death_penalty and both.terminal == 0.0  # no final-metric bonus for dying
    assert step_terms(metric_after=0.3).death == 0.0


def test_invalid_penalty_only_when_invalid():
    assert step_terms(invalid=True).invalid == -CFG.invalid_action_penalty
    assert step_terms(invalid=False).invalid == 0.0


def test_shaping_term_and_terminal_potential():
    t = step_terms(phi_before=0.3, phi_after=0.7)
    assert t.shaping == pytest.approx(CFG.pbrs_weight * (CFG.gamma * 0.7 - 0.3))
    # a terminal (or rolled-back) next state has Φ = 0 whatever the slots look like
    for kw in ({"terminal": True}, {"rolled_back": True}):
        t = step_terms(phi_before=0.3, phi_after=0.7, **kw)
        assert t.shaping == pytest.approx(-CFG.pbrs_weight * 0.3)


def test_total_combines_every_term_with_its_sign():
    t = step_terms(metric_before=0.2, metric_after=0.35, phi_before=0.1, phi_after=0.4, excess_ratio=0.5, episode_steps=4,
                   op=Op.GERMINATE, terminal=True, rolled_back=False, invalid=True)
    assert all(v != 0 for v in (t.metric, t.shaping, t.rent, t.action_cost, t.terminal, t.invalid))
    assert all(t[k] < 0 for k in ("rent", "action_cost", "invalid"))  # costs are signed in the mapping itself
    expected = (CFG.acc_weight * 0.15 + CFG.pbrs_weight * (0 - 0.1) - CFG.rent_lambda * 0.5 / 4 - CFG.germinate_cost
                + CFG.terminal_weight * 0.35 - CFG.invalid_action_penalty)
    assert t.total == pytest.approx(expected, abs=1e-12)


def test_potential_sums_the_stage_potentials():
    reports = [SlotReport("a", Stage.TRAINING), SlotReport("b", Stage.FOSSILIZED), SlotReport("c", Stage.DORMANT)]
    cfg = RewardConfig()
    assert potential(reports, cfg) == pytest.approx(cfg.stage_potentials["TRAINING"] + cfg.stage_potentials["FOSSILIZED"])
    assert potential([], cfg) == 0.0


def test_a_new_term_is_one_function_in_the_mapping(monkeypatch):
    """The reward is the sum of REWARD_TERMS: adding an entry adds a logged, paid term and nothing else changes."""
    before = step_terms(metric_before=0.2, metric_after=0.3, op=Op.GERMINATE)
    monkeypatch.setitem(REWARD_TERMS, "bonus", lambda c, s: 0.25 if s.op is Op.GERMINATE else 0.0)
    after = step_terms(metric_before=0.2, metric_after=0.3, op=Op.GERMINATE)
    assert after.bonus == 0.25 and {k: after[k] for k in before} == before
    assert after.total == pytest.approx(before.total + 0.25, abs=1e-15)


# ---------------------------------------------------------------------------------------------- PBRS telescopes


def _random_legal(spec, flat, rng):
    m = ActionMasks.from_flat(spec, flat)
    op = int(rng.choice(np.flatnonzero(m.op)))
    slot = int(rng.choice(np.flatnonzero(m.slot[op])))
    _, bp, blend = m.head_masks(op, slot)
    return np.array([op, slot, int(rng.choice(np.flatnonzero(bp))), int(rng.choice(np.flatnonzero(blend)))])


@pytest.fixture(scope="module", params=[1.0, 0.9], ids=["gamma1", "gamma0.9"])
def shaped_env(request) -> EsperEnv:
    world = dict(TINY_WORLD, reward={"gamma": request.param})
    return EsperEnv(WorldConfig.model_validate(world))


@pytest.mark.parametrize("episode", range(3))
def test_shaping_telescopes_over_a_real_episode(shaped_env, episode):
    """Σ_t γ^t·F_t = γ^T·Φ(s_T) − Φ(s_0) = −Φ(s_0) (terminal Φ is 0), i.e. 0 from an all-dormant start.
    With γ = 1 this is the plain sum of the logged shaping terms."""
    env, cfg = shaped_env, shaped_env.world.reward
    rng = np.random.default_rng(100 + episode)
    obs, _ = env.reset(seed=episode)
    phi0 = potential(env.model.reports(), cfg)
    assert phi0 == 0.0
    # germinate first (else an all-WAIT walk would make the check trivial), then play uniformly at random
    m = ActionMasks.from_flat(env.action_spec, obs["action_mask"])
    slot = int(np.flatnonzero(m.slot[Op.GERMINATE])[0])
    first = np.array([int(Op.GERMINATE), slot, int(np.flatnonzero(m.blueprint[slot])[0]), 0])
    shaping, done, action = [], False, first
    while not done:
        obs, reward, terminated, truncated, info = env.step(action)
        terms = info["reward_terms"]
        assert info["counts"]["invalid"] == 0
        # the env's logged terms are the ones it pays, and its rent is charged on the model's own ratio
        assert list(terms) == list(REWARD_TERMS) and reward == pytest.approx(sum(terms.values()), abs=1e-12)
        assert terms["rent"] == pytest.approx(-cfg.rent_lambda * info["excess_ratio"] / env.world.trainer.epochs)
        assert terms["compute_rent"] == 0.0  # off by default
        assert info["excess_ratio"] == env.model.param_counts().excess_ratio
        shaping.append(terms["shaping"])
        done = terminated or truncated
        action = _random_legal(env.action_spec, obs["action_mask"], rng)
    assert len(shaping) == env.world.trainer.epochs and not info["rolled_back"]
    assert any(abs(f) > 1e-6 for f in shaping), "the episode never changed the potential"
    discounted = math.fsum(cfg.gamma ** t * f for t, f in enumerate(shaping))
    assert discounted == pytest.approx(-cfg.pbrs_weight * phi0, abs=1e-9)
    if cfg.gamma == 1.0:
        assert math.fsum(shaping) == pytest.approx(-cfg.pbrs_weight * phi0, abs=1e-9)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_discounted_shaping_telescopes_on_synthetic_potentials(gamma, seed):
    """Σ_t γ^t·F_t = γ^T·Φ_T − Φ_0 with Φ_T = 0 at termination, whatever Φ_1 … Φ_{T−1} are."""
    cfg = RewardConfig(gamma=gamma, pbrs_weight=1.0)
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 20))
    phis = list(rng.uniform(0.0, 2.0, size=T + 1))  # Φ_T is whatever the slots say; the reward must zero it
    total = math.fsum(
        gamma ** t * step_terms(cfg, phi_before=phis[t], phi_after=phis[t + 1], terminal=(t == T - 1)).shaping
        for t in range(T)
    )
    assert total == pytest.approx(gamma ** T * 0.0 - phis[0], abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_discounted_shaping_telescopes_when_a_rollback_ends_the_episode(seed):
    cfg = RewardConfig(gamma=0.95, pbrs_weight=0.4)
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 10))  # the rollback happens at step k − 1, ending the episode
    phis = list(rng.uniform(0.0, 2.0, size=k + 1))
    total = math.fsum(
        cfg.gamma ** t * step_terms(cfg, phi_before=phis[t], phi_after=phis[t + 1], rolled_back=(t == k - 1)).shaping
        for t in range(k)
    )
    assert total == pytest.approx(-cfg.pbrs_weight * phis[0], abs=1e-9)


# ---------------------------------------------------------------------------------------------- config


def test_stage_potentials_must_name_every_stage():
    partial = {s.name: 0.1 for s in Stage if s is not Stage.HOLDING}
    with pytest.raises(pydantic.ValidationError, match="HOLDING"):
        RewardConfig(stage_potentials=partial)


def test_stage_potentials_reject_unknown_stages():
    extra = {s.name: 0.0 for s in Stage} | {"SPROUTING": 0.2}
    with pytest.raises(pydantic.ValidationError, match="SPROUTING"):
        RewardConfig(stage_potentials=extra)


def test_complete_stage_potentials_are_accepted():
    cfg = RewardConfig(stage_potentials={s.name: float(s) for s in Stage})
    assert potential([SlotReport("a", Stage.HOLDING)], cfg) == float(Stage.HOLDING)


@pytest.mark.parametrize("field,value", [("gamma", 0.0), ("gamma", 1.5), ("acc_weight", -1.0), ("rent_lambda", -0.1)])
def test_out_of_range_weights_are_rejected(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        RewardConfig(**{field: value})
