"""Emrakul: withering audits of fossils — the trainer, FLOPs books, Governor, churn measurement and the reaper."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from _support import EventLog, advance_to, image_task, open_gates, perturb, signals_at, tiny_model
from esper.emrakul import EmrakulConfig, EmrakulReaper
from esper.kasmina import IllegalCommandError
from esper.leyline import ActionSpec, BlendCurve, FactoredAction, Op, SlotReport, Stage, compute_masks
from esper.leyline.control import Observation
from esper.leyline.features import encode, feature_names, feature_size
from esper.leyline.telemetry import AuditEvent
from esper.tolaria.data import load_synthetic, split_train_val
from esper.tolaria.flops import seed_train_flops, seeds_train_flops
from esper.tolaria.governor import Governor, GovernorConfig
from esper.tolaria.run import Run, run_training
from esper.tolaria.trainer import Trainer, TrainerConfig
from esper.tamiyo import WaitTamiyo

_DATA = load_synthetic(320, seed=0)
_TRAIN, _VAL = split_train_val(_DATA, 0.2, seed=0)
_TASK = image_task(_TRAIN, _VAL)
CFG = TrainerConfig(epochs=12, batch_size=64, max_batches_per_epoch=2)


def _fossil_model(slots=("block2",), wither_tempo: int = 2):
    torch.manual_seed(0)
    model = tiny_model(open_gates().model_copy(update={"wither_tempo": wither_tempo}))
    for slot in slots:
        model.germinate(slot, "conv_light", tempo=3, curve="linear")
        advance_to(model, slot, Stage.FOSSILIZED)
        perturb(model.slot(slot).seed, scale=0.2, seed=1)
    return model


def _wither_fully(model, slot: str) -> None:
    model.wither(slot)
    while model.slot(slot).alpha > 0:
        model.slot(slot).step_epoch()


# ------------------------------------------------------------------------------------------ trainer and books
def test_a_culled_fossil_leaves_the_host_optimiser_and_its_state():
    model = _fossil_model()
    trainer = Trainer(model, _TASK, CFG, seed=0)
    trainer.train_epoch()
    seed_params = {id(p) for p in model.slot("block2").seed.parameters()}
    in_opt = lambda: {id(p) for g in trainer.host_opt.param_groups for p in g["params"]}
    assert seed_params <= in_opt() and any(id(p) in seed_params for p in trainer.host_opt.state)
    _wither_fully(model, "block2")
    trainer.train_epoch()  # a withering fossil stays in the host's optimiser (α = 0: it gets no gradient)
    assert seed_params <= in_opt() and trainer.fossil_group_order == ["block2"]
    model.cull("block2")
    trainer.train_epoch()
    assert not (seed_params & in_opt()), "a culled fossil's parameters are still stepped"
    assert not any(id(p) in seed_params for p in trainer.host_opt.state), "its momentum is kept alive"
    assert trainer.fossil_group_order == [] and len(trainer.host_opt.param_groups) == 1
    trainer.host_opt.load_state_dict(trainer.host_opt.state_dict())  # the optimiser is still consistent


def test_culling_one_of_two_fossils_keeps_the_other_in_its_own_group():
    model = _fossil_model(("block1", "block3"))
    trainer = Trainer(model, _TASK, CFG, seed=0)
    trainer.train_epoch()
    kept = list(model.slot("block3").seed.parameters())
    _wither_fully(model, "block1")
    model.cull("block1")
    trainer.train_epoch()
    assert trainer.fossil_group_order == ["block3"]
    assert [id(p) for p in trainer.host_opt.param_groups[1]["params"]] == [id(p) for p in kept]
    assert all(p in trainer.host_opt.state for p in kept)


def test_booked_flops_and_parameters_fall_when_a_fossil_is_culled():
    model = _fossil_model()
    slot = model.slot("block2")
    trainer = Trainer(model, _TASK, CFG, seed=0)
    trainer.train_epoch()
    per_sample, params = seeds_train_flops(model), model.param_counts()
    cost = seed_train_flops("conv_light", slot.point, True)
    assert per_sample == pytest.approx(cost) and params.fossilized == slot.seed_params > 0
    model.wither("block2")
    slot.step_epoch()
    assert 0 < slot.alpha < 1 and seeds_train_flops(model) == pytest.approx(cost)  # still runs at α > 0
    while slot.alpha > 0:
        slot.step_epoch()
    assert seeds_train_flops(model) == 0.0  # α = 0: the seed does not run
    freed = slot.seed_params
    model.cull("block2")
    after = model.param_counts()
    assert after.fossilized == 0 and after.total == params.total - freed
    assert sum(p.numel() for p in model.parameters()) == after.total
    before = trainer.train_flops
    with FlopCounterMode(display=False) as counter:
        trainer.train_epoch()
    booked = trainer.train_flops - before
    assert booked == pytest.approx(counter.get_total_flops(), rel=0.05)
    assert booked == pytest.approx(trainer.host_flops * 128)  # the host alone again (2 batches of 64)


# ------------------------------------------------------------------------------------------ the Governor
def test_a_rollback_revives_a_withering_fossil_and_keeps_it_in_the_optimiser():
    model = _fossil_model()
    trainer = Trainer(model, _TASK, CFG, seed=0)
    log = EventLog()
    model.listeners.append(log)
    governor = Governor(trainer, GovernorConfig(), emit=log)
    governor.observe(trainer.train_epoch())
    model.wither("block2")
    model.step_epoch()
    governor.observe(trainer.train_epoch())  # the snapshot now holds the withering seed (α = 0.5)
    assert model.slot("block2").stage is Stage.WITHERING
    with torch.no_grad():
        next(model.host.parameters()).fill_(float("nan"))
    assert governor.observe(float("nan"), False) is True
    slot = model.slot("block2")
    assert slot.stage is Stage.FOSSILIZED and slot.alpha == 1.0 and governor.revived == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.fossil_group_order == ["block2"]
    assert {id(p) for p in slot.seed.parameters()} <= {id(p) for g in trainer.host_opt.param_groups for p in g["params"]}
    assert math.isfinite(trainer.train_epoch())


# ------------------------------------------------------------------------------------------ churn
def _metric_with_alpha(model, slot: str, alpha: float) -> tuple[float, float]:
    """(metric, loss) on the validation split with `slot`'s α forced — separate passes, not the fused one."""
    from esper.tolaria.counterfactual import evaluate_with_counterfactuals
    model.slot(slot).alpha_override = alpha
    try:
        ev = evaluate_with_counterfactuals(model, _TASK, _TASK.val_batches, counterfactuals=False)
    finally:
        model.slot(slot).alpha_override = None
    return ev.metric, ev.loss


def test_churn_is_the_paired_difference_with_and_without_the_seed_and_the_fused_pass_books_the_audit_apart():
    model = _fossil_model(("block1", "block2"), wither_tempo=3)
    reaper = type("Once", (), {"name": "once", "fired": False})()

    def decide(obs):  # wither block2 at the first decision, then wait
        from esper.leyline.control import Decision
        op = Op.WAIT if reaper.fired else Op.WITHER
        reaper.fired = True
        return Decision(FactoredAction(op, 1), "test")
    reaper.decide = decide
    run = Run(model, _TASK, CFG, GovernorConfig(), data_seed=0, reaper=reaper)
    slot = model.slot("block2")
    run.step(FactoredAction(Op.WAIT))  # WITHER; this epoch trains at α = 1: the host has not trained without it
    assert slot.churn is None and slot.alpha == pytest.approx(2 / 3)
    churns = []
    for alpha_after in (1 / 3, 0.0):  # epochs trained with the seed dropped per sample (keep 2/3, then 1/3)
        run.step(FactoredAction(Op.WAIT))
        (on, loss_on), (off, loss_off) = _metric_with_alpha(model, "block2", 1.0), _metric_with_alpha(model, "block2", 0.0)
        assert slot.alpha == pytest.approx(alpha_after)
        assert slot.churn == pytest.approx(on - off) and slot.churn_loss == pytest.approx(loss_off - loss_on)
        churns.append(slot.churn)
    assert run.audit_flops > 0  # the withering seed's two branches while α > 0
    audit_before = run.audit_flops
    run.step(FactoredAction(Op.WAIT))  # at α = 0 the seed has no branch: no audit compute, no new churn
    assert run.audit_flops == audit_before and run.counterfactual_flops > 0  # block1's branches go on
    assert slot.churn == churns[-1]


def test_a_withering_seed_trains_on_or_off_per_sample_and_evaluates_at_its_expectation():
    model = _fossil_model(("block2",), wither_tempo=2)
    model.wither("block2")
    model.step_epoch()  # α = 0.5
    slot = model.slot("block2")
    seen = []
    hook = slot.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.eval()
    model(_TASK.val_batches[0][0][:1])
    hook.remove()
    h = torch.randn(400, *seen[0].shape[1:])  # features shaped like the slot's input, 400 samples
    whole = h + slot.seed(h)
    slot.train()
    torch.manual_seed(3)
    out = slot(h)
    on = torch.isclose(out, whole).flatten(1).all(1)
    off = torch.equal(out[~on], h[~on])
    assert off and 0.4 < on.float().mean() < 0.6  # each sample: exactly h or exactly h + f(h), about half each
    slot.eval()
    assert torch.allclose(slot(h), h + 0.5 * slot.seed(h))


def test_at_alpha_zero_the_model_is_the_model_without_the_slot_bit_for_bit():
    model = _fossil_model(("block1", "block2"))
    model.eval()
    x = _TASK.val_batches[0][0]
    _wither_fully(model, "block2")
    withered = model(x)
    model.slot("block2").seed, kept = None, model.slot("block2").seed  # the slot as if it held nothing
    try:
        assert torch.equal(withered, model(x))
    finally:
        model.slot("block2").seed = kept


# ------------------------------------------------------------------------------------------ the reaper
SPEC = ActionSpec(slots=("a", "b"), blueprints=("conv_light",), tempos=(3,), curves=(BlendCurve.LINEAR,),
                  blueprint_allowed=((True,), (True,)), audit=True)


def _obs(reports, epoch=5, max_epochs=20, rent=0.05, host=10_000):
    signals = replace(signals_at(epoch, max_epochs), rent_lambda=rent, host_params=host)
    return Observation(signals, reports, compute_masks(SPEC, reports), SPEC)


def _report(name, stage, **kw):
    defaults = {"blueprint": "conv_light", "seed_params": 1000}
    return SlotReport(name, stage, **(defaults | kw))


def test_the_reaper_audits_the_fossil_that_pays_its_rent_least_after_it_is_stable():
    reaper = EmrakulReaper(EmrakulConfig(enabled=True, stable_epochs=3), wither_tempo=2)
    young = [_report("a", Stage.FOSSILIZED, alpha=1.0, epochs_in_stage=2, contribution=0.0),
             _report("b", Stage.FOSSILIZED, alpha=1.0, epochs_in_stage=2, contribution=0.05)]
    assert reaper.decide(_obs(young)).action.op is Op.WAIT
    stable = [replace(r, epochs_in_stage=3) for r in young]
    d = reaper.decide(_obs(stable))
    assert d.action == FactoredAction(Op.WITHER, 0), d  # a: contribution 0 − rent 0.005 < b's 0.045


@pytest.mark.parametrize("churns, verdict", [((-0.01, 0.0), Op.CULL), ((0.002, 0.006), Op.CULL),
                                             ((0.006, 0.006), Op.REVIVE), ((None, None), Op.REVIVE)])
def test_the_verdict_weighs_the_audits_mean_churn_against_rent(churns, verdict):
    """rent = 0.05 × 1000 / 10000 = 0.005: a seed whose absence costs less than that on average is culled; one
    whose audit measured nothing is kept."""
    reaper = EmrakulReaper(EmrakulConfig(enabled=True), wither_tempo=3)
    dormant = _report("b", Stage.DORMANT, blueprint=None, seed_params=0)
    first = _report("a", Stage.WITHERING, alpha=1 / 3, churn=churns[0])
    assert reaper.decide(_obs([first, dormant], epoch=8)).action.op is Op.WAIT
    last = _report("a", Stage.WITHERING, alpha=0.0, churn=churns[1], gate_open=True)
    d = reaper.decide(_obs([last, dormant], epoch=9))
    assert d.action == FactoredAction(verdict, 0), d


def test_emrakul_needs_a_wither_tempo_that_trains_with_and_without_the_seed():
    from esper.world import WorldConfig
    with pytest.raises(ValueError, match="kasmina.wither_tempo"):
        WorldConfig.model_validate({"kasmina": {"wither_tempo": 1}, "emrakul": {"enabled": True}})
    WorldConfig.model_validate({"kasmina": {"wither_tempo": 1}})  # without audits any tempo is fine


def test_the_reaper_revives_early_when_withering_hurts_and_never_starts_an_audit_it_cannot_finish():
    reaper = EmrakulReaper(EmrakulConfig(enabled=True, revive_above=0.02), wither_tempo=4)
    hurt = [_report("a", Stage.WITHERING, alpha=0.75, churn=0.03), _report("b", Stage.DORMANT, blueprint=None)]
    assert reaper.decide(_obs(hurt, epoch=5)).action.op is Op.WAIT, "one noisy epoch is not enough"
    hurt[0] = replace(hurt[0], alpha=0.5)
    assert reaper.decide(_obs(hurt, epoch=6)).action == FactoredAction(Op.REVIVE, 0)
    stable = [_report("a", Stage.FOSSILIZED, alpha=1.0, epochs_in_stage=9), _report("b", Stage.DORMANT, blueprint=None)]
    # WITHER at decision e; α reaches 0 after 4 epochs: the verdict at decision e+4 ≤ 19, the last
    assert reaper.decide(_obs(stable, epoch=14)).action.op is Op.WAIT, "a revived fossil is not audited again"
    fresh = EmrakulReaper(EmrakulConfig(enabled=True), wither_tempo=4)
    assert fresh.decide(_obs(stable, epoch=15, max_epochs=20)).action.op is Op.WITHER
    late = EmrakulReaper(EmrakulConfig(enabled=True), wither_tempo=4)
    assert late.decide(_obs(stable, epoch=16, max_epochs=20)).action.op is Op.WAIT


def test_a_layout_without_audits_reads_a_withering_seed_as_the_fossil_it_still_is():
    model = _fossil_model()
    spec = model.action_spec
    assert not spec.audit and spec.nvec[0] == 4 and model.audit_spec.nvec[0] == 6
    names = feature_names(spec)
    assert len(names) == feature_size(spec) and not any("wither" in n or "churn" in n for n in names)
    model.wither("block2")
    feats = dict(zip(names, encode(spec, signals_at(), model.reports())))
    assert feats["block2/stage_fossilized"] == 1.0 and feats["block2/alpha"] == 1.0
    audit_names = feature_names(model.audit_spec)
    assert len(audit_names) == feature_size(model.audit_spec) == len(names) + 3 * len(spec.slots)
    audit_feats = dict(zip(audit_names, encode(model.audit_spec, signals_at(), model.reports())))
    assert audit_feats["block2/stage_withering"] == 1.0 and audit_feats["block2/stage_fossilized"] == 0.0
    with pytest.raises(IllegalCommandError):  # Tamiyo's layout has no WITHER: index 4 is out of range
        model.apply(FactoredAction(Op.REVIVE, 1))


# ------------------------------------------------------------------------------------------ the Run
def test_a_run_calls_emrakul_after_tamiyo_and_reports_each_audit():
    from esper.emrakul import build_reaper

    model = _fossil_model(("block2",), wither_tempo=2)
    reaper = build_reaper(EmrakulConfig(enabled=True, stable_epochs=1, rent_weight=10.0, revive_above=1.0), 2)  # cull
    run = Run(model, _TASK, CFG, GovernorConfig(), data_seed=0, reaper=reaper)
    log = EventLog()
    run.listen(log)
    result = run_training(run, WaitTamiyo())
    audits = [e for e in log.events if isinstance(e, AuditEvent)]
    assert [e.verdict for e in audits] == ["wither", "cull"] and all(e.by == "emrakul" for e in audits)
    assert audits[1].churn is not None and audits[1].seed_params > 0
    assert result.culled_fossils == 1 and result.excess_ratio == 0.0 and result.audit_flops > 0
    assert any("emrakul WITHER block2" in d for d in result.decisions)
    assert result.audit_flops < 0.1 * result.train_flops


# ------------------------------------------------------------------------------------------ the RL env
def test_a_world_with_audit_actions_offers_tamiyo_wither_and_revive_and_the_policy_samples_them_legally():
    """Random legal play in an audit world uses every op, never invalid; the prune credit is paid on the cull of a
    withered fossil; the policy network sized by the audit layout samples only what the masks allow."""
    import numpy as np
    from collections import Counter

    from test_policy import assert_all_allowed, make_net
    from test_simic_env import CHEAP_WORLD, assert_obs_ok, legal_random_action
    from esper.simic.env import EsperEnv
    from esper.world import WorldConfig

    world = WorldConfig.model_validate(CHEAP_WORLD | {
        "kasmina": {"lifecycle": "graft", "audit_actions": True, "wither_tempo": 1},
        "reward": {"prune_weight": 1.0}})
    env = EsperEnv(world)
    spec = env.action_spec
    assert spec.audit and spec.nvec[0] == 6
    rng = np.random.default_rng(0)
    ops, pruned_credit, masks = Counter(), [], []
    for episode in range(4):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            assert_obs_ok(env, obs)
            masks.append(obs["action_mask"])
            obs, _, terminated, truncated, info = env.step(legal_random_action(spec, obs["action_mask"], rng))
            assert info["counts"]["invalid"] == 0
            ops[info["op"]] += 1
            if info["reward_terms"]["prune"]:
                pruned_credit.append(info["reward_terms"]["prune"])
            done = terminated or truncated
    assert all(ops[o.name] > 0 for o in spec.ops if o is not Op.ADVANCE), ops  # graft: nothing left to advance
    assert pruned_credit and all(c > 0 for c in pruned_credit)
    net = make_net(spec, adversarial=True)
    gen = torch.Generator().manual_seed(0)
    mask = torch.as_tensor(np.stack(masks))
    features = torch.randn(len(masks), feature_size(spec), generator=gen).clamp(-5, 5)
    with torch.no_grad():
        out = net(features, mask, generator=gen)
    assert_all_allowed(spec, mask, out.actions)


# ------------------------------------------------------------------------------------------ grow, then prune
def test_emrakul_arms_of_a_comparison_and_their_paired_table():
    from esper.study.compare import CompareConfig
    from esper.study.prune import prune_pairs, prune_table

    cfg = CompareConfig(arms=["schedule", "schedule+emrakul", "capacity"])
    assert cfg.arms[1] == "schedule+emrakul"
    with pytest.raises(ValueError, match="unknown controller"):
        CompareConfig(arms=["schedule", "nonsense+emrakul"])
    rows = [{"arm": arm, "seed": s, "val_metric": m, "excess_ratio": x, "params_total": p, "train_flops": 100.0,
             "audit_flops": a, "culled_fossils": c, "revived_fossils": 0}
            for s, (m1, m2) in enumerate([(0.60, 0.61), (0.62, 0.60), (0.58, 0.59)])
            for arm, m, x, p, a, c in (("schedule", m1, 2.0, 300, 0.0, 0), ("schedule+emrakul", m2, 0.5, 150, 3.0, 2))]
    (pair,) = prune_pairs(rows, ["schedule", "schedule+emrakul"], rent_lambda=0.05)
    assert pair["d_metric"][0] == pytest.approx((0.01 - 0.02 + 0.01) / 3)
    assert pair["d_adjusted"][0] == pytest.approx(pair["d_metric"][0] + 0.05 * 1.5)
    assert pair["fewer_params"] == pytest.approx(0.5) and pair["audit_share"] == pytest.approx(0.03)
    assert pair["culled"] == 6 and "schedule+emrakul | schedule | 3" in prune_table(rows, ["schedule", "schedule+emrakul"], 0.05)
    assert prune_table(rows, ["schedule"], 0.05) == ""
