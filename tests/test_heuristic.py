"""Tamiyo controllers: the heuristic only emits legal actions and follows its rules; WAIT and controllers by name.
(Fixed plans and schedules: test_plans.py.)"""

from __future__ import annotations

import random

import pytest

from _support import advance_to, obs_of as _obs, open_gates, signals_at as _signals, tiny_model
from esper.kasmina.config import BlendChoices, KasminaConfig
from esper.leyline import BlendCurve, FactoredAction, Op, Stage, TrainingSignals
from esper.leyline.actions import PRE_AUDIT_OPS
from esper.tamiyo import HeuristicConfig, HeuristicTamiyo, WaitTamiyo


def _legal_actions(model) -> list[FactoredAction]:
    masks = model.masks()
    out = []
    for op in model.action_spec.ops:
        if not masks.op[op]:
            continue
        if op is Op.WAIT:
            out.append(FactoredAction(Op.WAIT))
            continue
        for slot in range(masks.slot.shape[1]):
            if not masks.slot[op, slot]:
                continue
            if op is Op.GERMINATE:
                for bp in range(masks.blueprint.shape[1]):
                    if masks.blueprint[slot, bp]:
                        out += [FactoredAction(op, slot, bp, blend) for blend in range(len(masks.blend)) if masks.blend[blend]]
            else:
                out.append(FactoredAction(op, slot))
    return out


GATE_CONFIGS = [
    KasminaConfig(gate_profile="permissive"),
    KasminaConfig(gate_profile="strict"),
    open_gates(),
    open_gates(embargo_epochs=0, min_training_epochs=2),
    # a narrower plane: blueprints, tempos and curves the heuristic's defaults do not all name
    KasminaConfig(blueprints=("attention", "norm"), blend=BlendChoices(tempos=(1, 2), curves=(BlendCurve.COSINE,))),
]


def _random_heuristic_config(rng: random.Random) -> HeuristicConfig:
    prefs = ["conv_light", "bottleneck", "depthwise", "attention", "norm", "conv_heavy", "mlp", "missing"]
    rng.shuffle(prefs)
    return HeuristicConfig(
        warmup_epochs=rng.randint(0, 3), plateau_window=rng.randint(1, 3), plateau_delta=rng.choice([0.0, 0.01, 0.5, 1.0]),
        max_live_seeds=rng.randint(1, 3), min_epochs_left=rng.randint(0, 5), cull_below=rng.choice([0.0, -0.005, -0.1]),
        fossilize_above=rng.choice([-1.0, 0.0, 0.02]), judge_after_epochs=rng.randint(0, 2),
        max_stage_epochs=rng.randint(1, 4), blueprint_preference=tuple(prefs[: rng.randint(1, len(prefs))]),
        tempo=rng.randint(1, 10), curve=rng.choice(["linear", "cosine", "sigmoid", "bogus"]),
    )


OP_WEIGHTS = {Op.WAIT: 2.0, Op.GERMINATE: 1.0, Op.ADVANCE: 3.0, Op.CULL: 0.4}  # long enough lives to reach every stage


def _random_plane(rng: random.Random, visit=None):
    """A tiny model driven by random legal actions, random measurements and random epoch ticks;
    `visit(model)` is called on every intermediate state."""
    model = tiny_model(rng.choice(GATE_CONFIGS))
    for _ in range(rng.randint(0, 20)):
        legal = _legal_actions(model)
        ops = sorted({a.op for a in legal})  # op first, so GERMINATE's many variants do not crowd out the rest
        op = rng.choices(ops, weights=[OP_WEIGHTS[o] for o in ops])[0]
        model.apply(rng.choice([a for a in legal if a.op is op]))
        for name, slot in model.slots.items():
            if slot.seed is not None and rng.random() < 0.7:
                slot.record(contribution=rng.uniform(-0.1, 0.1), grad_norm=rng.choice([0.0, 1e-9, rng.uniform(0, 2)]))
        if visit is not None:
            visit(model)
        if rng.random() < 0.8:
            model.step_epoch()
            if visit is not None:
                visit(model)
    return model


def _random_signals(rng: random.Random) -> TrainingSignals:
    max_epochs = rng.randint(1, 30)
    epoch = rng.randint(0, max_epochs)
    if rng.random() < 0.5:
        accs = tuple(rng.uniform(0, 1) for _ in range(epoch))
    else:
        base = rng.uniform(0, 0.9)
        accs = tuple(base + rng.uniform(0, 0.005) for _ in range(epoch))  # plateau
    return _signals(epoch, max_epochs, accs)


def test_heuristic_always_returns_a_legal_action_over_random_planes():
    rng = random.Random(2024)
    ops = {op: 0 for op in PRE_AUDIT_OPS}
    states = 0

    def check(model, controller) -> FactoredAction:
        nonlocal states
        obs = _obs(model, _random_signals(rng))
        decision = controller.decide(obs)
        assert obs.masks.allows(decision.action), (decision, [r.stage.name for r in obs.reports])
        assert isinstance(decision.reason, str) and decision.reason
        ops[decision.action.op] += 1
        states += 1
        return decision.action

    for _ in range(120):
        controller = HeuristicTamiyo(_random_heuristic_config(rng) if rng.random() < 0.7 else None)
        model = _random_plane(rng, visit=lambda m: check(m, controller))
        for _ in range(3):  # and the plane accepts what the heuristic says, step after step
            model.apply(check(model, controller))
            model.step_epoch()
    assert states > 1000
    assert all(n > 50 for n in ops.values()), f"the random planes should exercise every op: {ops}"


def test_random_driving_reaches_every_stage():
    """Guards the property test above: the random planes are not all trivially dormant."""
    rng = random.Random(7)
    seen: set[Stage] = set()
    for _ in range(60):
        _random_plane(rng, visit=lambda m: seen.update(r.stage for r in m.reports()))
    assert seen == set(Stage) - {Stage.WITHERING}  # Tamiyo's layout here has no audits (Emrakul's: test_emrakul)


# ------------------------------------------------------------------------------------------------ rules
LEFT = HeuristicConfig().min_epochs_left  # the deadline: exactly this many epochs to go
DEADLINE = 20 - LEFT


def test_germinates_on_a_plateau_after_warmup():
    model = tiny_model()
    decision = HeuristicTamiyo().decide(_obs(model, _signals(epoch=5, accs=(0.3, 0.4, 0.5, 0.5, 0.5))))
    a = decision.action
    assert a.op is Op.GERMINATE
    spec = model.action_spec
    assert spec.slots[a.slot] == "block3", "the widest dormant slot"
    assert spec.blueprints[a.blueprint] == "conv_light", "the first preferred blueprint"
    assert spec.blend_choice(a.blend) == (3, spec.curves[0]) and spec.curves[0].value == "linear"
    model.apply(a)
    assert model.slot("block3").stage is Stage.GERMINATED


def test_compute_timed_growth_germinates_once_its_share_of_the_budget_is_spent():
    from dataclasses import replace

    model = tiny_model()
    h = HeuristicTamiyo(HeuristicConfig(germinate_at_budget=0.4))
    improving = _signals(epoch=1, accs=(0.1, 0.3))  # neither plateau nor warmup matter to this trigger
    assert h.decide(_obs(model, replace(improving, budget_spent=0.39))).action.op is Op.WAIT
    a = h.decide(_obs(model, replace(improving, budget_spent=0.41))).action
    assert a.op is Op.GERMINATE and model.action_spec.slots[a.slot] == "block3"
    model.apply(a)
    assert h.decide(_obs(model, replace(improving, budget_spent=0.6))).action.op is not Op.GERMINATE, "one seed"


def test_does_not_germinate_during_warmup_or_while_improving():
    model = tiny_model()
    cfg = HeuristicConfig(warmup_epochs=4)
    flat = (0.5, 0.5, 0.5)
    assert HeuristicTamiyo(cfg).decide(_obs(model, _signals(epoch=3, accs=flat))).action.op is Op.WAIT
    assert HeuristicTamiyo(cfg).decide(_obs(model, _signals(epoch=4, accs=flat + (0.5,)))).action.op is Op.GERMINATE
    rising = (0.1, 0.2, 0.3, 0.4, 0.5)
    assert HeuristicTamiyo().decide(_obs(model, _signals(epoch=5, accs=rising))).action.op is Op.WAIT
    # history shorter than the plateau window + 1: no verdict yet
    assert HeuristicTamiyo(HeuristicConfig(warmup_epochs=0)).decide(_obs(model, _signals(epoch=2, accs=(0.5, 0.5)))).action.op is Op.WAIT


def test_does_not_germinate_near_the_end_or_beyond_max_live_seeds():
    model = tiny_model()
    late = _signals(epoch=21 - LEFT, max_epochs=20, accs=(0.5,) * (21 - LEFT))  # one epoch fewer than min_epochs_left
    assert HeuristicTamiyo().decide(_obs(model, late)).action.op is Op.WAIT
    model.germinate("block1", "conv_light", tempo=3)
    advance_to(model, "block1", Stage.TRAINING)  # one live seed already (gate to BLENDING not yet open)
    model.slot("block1").gates = model.slot("block1").gates.model_copy(update={"min_training_epochs": 5})
    obs = _obs(model, _signals(epoch=5, accs=(0.5,) * 5))
    assert HeuristicTamiyo().decide(obs).action.op is Op.WAIT
    decision = HeuristicTamiyo(HeuristicConfig(max_live_seeds=2)).decide(obs)
    assert decision.action.op is Op.GERMINATE and model.action_spec.slots[decision.action.slot] == "block3"


RISING = tuple(0.1 + 0.05 * i for i in range(20))  # never a plateau




def test_germinates_by_deadline_when_nothing_was_tried():
    model = tiny_model()
    at_deadline = _signals(epoch=DEADLINE, max_epochs=20, accs=RISING[:DEADLINE])
    decision = HeuristicTamiyo().decide(_obs(model, at_deadline))
    assert decision.action.op is Op.GERMINATE and "deadline" in decision.reason
    assert model.action_spec.slots[decision.action.slot] == "block3"
    for epoch in (DEADLINE - 1, DEADLINE + 1):  # only at that one epoch
        assert HeuristicTamiyo().decide(_obs(model, _signals(epoch, 20, RISING[:epoch]))).action.op is Op.WAIT
    off = HeuristicTamiyo(HeuristicConfig(germinate_by_deadline=False))
    assert off.decide(_obs(model, at_deadline)).action.op is Op.WAIT


def test_deadline_respects_warmup_and_tried_seeds():
    model = tiny_model()
    early = _signals(epoch=1, max_epochs=1 + LEFT, accs=RISING[:1])  # at the deadline, but still warming up
    assert HeuristicTamiyo().decide(_obs(model, early)).action.op is Op.WAIT
    assert HeuristicTamiyo(HeuristicConfig(warmup_epochs=1)).decide(_obs(model, early)).action.op is Op.GERMINATE
    model = tiny_model(open_gates())
    model.germinate("block1", "norm", tempo=1)
    advance_to(model, "block1", Stage.FOSSILIZED)  # a seed was tried (and kept)
    at_deadline = _signals(epoch=DEADLINE, max_epochs=20, accs=RISING[:DEADLINE])
    assert HeuristicTamiyo().decide(_obs(model, at_deadline)).action.op is Op.WAIT


def test_deadline_does_not_fire_after_a_culled_seed_came_back_to_dormant():
    """HeuristicConfig.germinate_by_deadline: "… if no plateau came and no seed was tried". A seed that was tried,
    culled and whose slot has served its embargo leaves every slot DORMANT again — it was still tried."""
    model = tiny_model()
    ctl = HeuristicTamiyo()
    first = ctl.decide(_obs(model, _signals(epoch=5, max_epochs=20, accs=(0.5,) * 5)))  # the controller's own seed
    assert first.action.op is Op.GERMINATE
    model.apply(first.action)
    model.cull("block3")  # it did not work out
    for _ in range(3):  # CULLED → EMBARGOED → RESETTING → DORMANT (permissive embargo: 1 epoch)
        model.step_epoch()
    assert all(r.stage is Stage.DORMANT for r in model.reports())
    at_deadline = _signals(epoch=DEADLINE, max_epochs=20, accs=RISING[:DEADLINE])
    assert HeuristicTamiyo().decide(_obs(model, at_deadline)).action.op is Op.GERMINATE  # a fresh controller would
    decision = ctl.decide(_obs(model, at_deadline))
    assert decision.action.op is Op.WAIT, decision.reason


def test_culls_a_holding_seed_with_negative_contribution():
    model = tiny_model(open_gates(min_holding_epochs=99))
    model.germinate("block2", "conv_light", tempo=1)
    advance_to(model, "block2", Stage.HOLDING)
    model.step_epoch()
    model.slot("block2").record(contribution=-0.05)
    obs = _obs(model, _signals())
    decision = HeuristicTamiyo().decide(obs)
    assert decision.action == FactoredAction(Op.CULL, model.action_spec.slots.index("block2"))
    model.apply(decision.action)
    assert model.slot("block2").stage is Stage.CULLED


def test_does_not_cull_before_the_contribution_is_trusted_or_when_positive():
    model = tiny_model(open_gates(min_holding_epochs=99))
    model.germinate("block2", "conv_light", tempo=1)
    advance_to(model, "block2", Stage.HOLDING)  # 0 epochs in stage < judge_after_epochs = 1
    model.slot("block2").record(contribution=-0.05)
    no_growth = _signals(epoch=1, accs=(0.5,))
    assert HeuristicTamiyo().decide(_obs(model, no_growth)).action.op is Op.WAIT
    model.step_epoch()
    model.slot("block2").record(contribution=0.03)
    assert HeuristicTamiyo().decide(_obs(model, no_growth)).action.op is Op.WAIT


def test_fossilizes_a_holding_seed_with_positive_contribution_only():
    model = tiny_model(open_gates())
    model.germinate("block2", "conv_light", tempo=1)
    advance_to(model, "block2", Stage.HOLDING)
    i = model.action_spec.slots.index("block2")
    no_growth = _signals(epoch=1, accs=(0.5,))
    assert HeuristicTamiyo().decide(_obs(model, no_growth)).action.op is Op.WAIT, "unmeasured: not fossilized"
    model.slot("block2").record(contribution=0.02)
    assert HeuristicTamiyo().decide(_obs(model, no_growth)).action == FactoredAction(Op.ADVANCE, i)


@pytest.mark.parametrize("stage", [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING])
def test_advances_when_a_gate_is_open(stage):
    model = tiny_model()
    model.germinate("block1", "depthwise", tempo=3)
    advance_to(model, "block1", stage)
    if stage is Stage.BLENDING:
        for _ in range(3):
            model.step_epoch()
    assert model.slot("block1").report().gate_open
    decision = HeuristicTamiyo().decide(_obs(model, _signals(epoch=1, accs=(0.5,))))
    assert decision.action == FactoredAction(Op.ADVANCE, 0)


def test_waits_while_a_gate_is_closed():
    model = tiny_model()
    model.germinate("block1", "depthwise", tempo=3)
    advance_to(model, "block1", Stage.BLENDING)  # α = 0: G3 closed
    assert not model.slot("block1").report().gate_open
    assert HeuristicTamiyo().decide(_obs(model, _signals(epoch=1, accs=(0.5,)))).action.op is Op.WAIT


def test_culls_a_stalled_seed():
    model = tiny_model(KasminaConfig(gate_profile="strict"))
    model.germinate("block1", "conv_light", tempo=3)
    advance_to(model, "block1", Stage.TRAINING)
    cfg = HeuristicConfig(max_stage_epochs=2)
    for _ in range(3):
        model.step_epoch()  # strict G2 needs a grad norm > 1e-8: never recorded, so the seed stalls
    decision = HeuristicTamiyo(cfg).decide(_obs(model, _signals(epoch=1, accs=(0.5,))))
    assert decision.action == FactoredAction(Op.CULL, 0) and "stalled" in decision.reason


def test_germination_adapts_to_a_narrow_plane():
    """Preferred blueprint, tempo and curve not offered: the first offered preference, the nearest tempo, the first curve."""
    model = tiny_model(KasminaConfig(blueprints=("attention", "norm"), blend=BlendChoices(tempos=(1, 6), curves=(BlendCurve.SIGMOID,))))
    obs = _obs(model, _signals(epoch=5))
    decision = HeuristicTamiyo(HeuristicConfig(tempo=4, curve="linear")).decide(obs)
    a = decision.action
    assert a.op is Op.GERMINATE and obs.masks.allows(a)
    assert model.action_spec.blueprints[a.blueprint] == "attention"
    assert model.action_spec.blend_choice(a.blend) == (6, BlendCurve.SIGMOID)
    nothing = HeuristicTamiyo(HeuristicConfig(blueprint_preference=("mlp", "conv_heavy"))).decide(obs)
    assert nothing.action.op is Op.WAIT, "no preferred blueprint fits a conv slot of this plane"


# ------------------------------------------------------------------------------------------------ baselines
def test_static_always_waits():
    rng = random.Random(3)
    for _ in range(20):
        model = _random_plane(rng)
        obs = _obs(model, _random_signals(rng))
        decision = WaitTamiyo().decide(obs)
        assert decision.action == FactoredAction(Op.WAIT) and obs.masks.allows(decision.action)


def test_controllers_by_name_and_their_noisy_versions():
    from esper.tamiyo.registry import controller_factory

    rng = random.Random(5)
    model = tiny_model()
    obs = [_obs(model, _random_signals(rng)) for _ in range(40)]
    heuristic, exact = controller_factory("heuristic")(), controller_factory("eps:0:heuristic", model.action_spec)()
    assert [heuristic.decide(o).action for o in obs] == [exact.decide(o).action for o in obs], "ε = 0 is the base"
    noisy = controller_factory("eps:1:wait")()
    actions = [noisy.decide(o).action for o in obs]
    assert all(o.masks.allows(a) for o, a in zip(obs, actions)) and any(a.op is not Op.WAIT for a in actions)
    assert noisy.name == "eps:1:wait"
    plan = controller_factory("plan:conv_light@block3,epoch=2", model.action_spec)
    assert plan() is not plan() and plan().start_epoch == 2, "a fresh controller per call"
    for bad, message in (("eps:2:wait", "0 ≤ ε ≤ 1"), ("eps:0.1:", "0 ≤ ε ≤ 1"), ("greedy", "unknown controller"),
                         ("ppo", "needs an agent"), ("plan:conv_light@block9", "slot 'block9'")):
        with pytest.raises(ValueError, match=message):
            controller_factory(bad, model.action_spec)
