"""Fixed growth plans and schedules: germinate in order, from their start epoch, and name what the plane lacks."""

from __future__ import annotations

import dataclasses

import pytest

from _support import obs_of as _obs, open_gates, signals_at as _signals, tiny_model
from esper.leyline import FactoredAction, Op, Stage
from esper.tamiyo import PlanTamiyo, ScheduleTamiyo


def test_schedule_germinates_at_its_epoch_then_advances():
    model = tiny_model()
    ctl = ScheduleTamiyo(2, "block3", "conv_light", 3)
    spec = model.action_spec
    for epoch in (0, 1):
        assert ctl.decide(_obs(model, _signals(epoch=epoch))).action.op is Op.WAIT
    decision = ctl.decide(_obs(model, _signals(epoch=2)))
    expected_blend = spec.blend_index(3, spec.curves[0])
    assert decision.action == FactoredAction(Op.GERMINATE, spec.slots.index("block3"), spec.blueprints.index("conv_light"), expected_blend)
    model.apply(decision.action)
    assert model.slot("block3").blueprint == "conv_light" and model.slot("block3").tempo == 3
    decision = ctl.decide(_obs(model, _signals(epoch=3)))
    assert decision.action == FactoredAction(Op.ADVANCE, spec.slots.index("block3"))


def test_schedule_respects_a_curve_choice_and_a_busy_slot():
    model = tiny_model()
    spec = model.action_spec
    ctl = ScheduleTamiyo(0, "block2", "bottleneck", 5, curve="cosine")
    action = ctl.decide(_obs(model, _signals(epoch=0))).action
    tempo, curve = spec.blend_choice(action.blend)
    assert (tempo, curve.value) == (5, "cosine")
    model.germinate("block2", "norm", tempo=3)  # slot no longer dormant at the scheduled epoch
    slot = model.slot("block2")
    slot.state = dataclasses.replace(slot.state, sanity_ok=False)  # and its gate is closed
    assert ctl.decide(_obs(model, _signals(epoch=0))).action.op is Op.WAIT


def test_plan_germinates_in_order_one_per_decision_then_advances():
    model = tiny_model(open_gates())
    spec = model.action_spec
    plan = PlanTamiyo.parse("conv_light@block3+bottleneck@block1")
    assert plan.plan == [("block3", "conv_light"), ("block1", "bottleneck")]
    taken = []
    for epoch in range(4):
        action = plan.decide(_obs(model, _signals(epoch=epoch))).action
        assert model.masks().allows(action)
        model.apply(action)
        taken.append((action.op, spec.slots[action.slot]))
    assert taken[:2] == [(Op.GERMINATE, "block3"), (Op.GERMINATE, "block1")], "germinations first, in plan order"
    assert model.slot("block3").blueprint == "conv_light" and model.slot("block1").blueprint == "bottleneck"
    assert taken[2:] == [(Op.ADVANCE, "block3"), (Op.ADVANCE, "block3")], "then the first seed's open gates"
    assert model.slot("block2").stage is Stage.DORMANT, "a slot the plan does not name is never touched"
    plan.reset()
    fresh = tiny_model(open_gates())
    assert plan.decide(_obs(fresh, _signals(epoch=0))).action.op is Op.GERMINATE, "reset() starts the plan over"


def test_a_plan_with_a_start_epoch_waits_for_it_then_grows_one_seed_per_decision():
    model = tiny_model(open_gates())
    spec = model.action_spec
    plan = PlanTamiyo.parse("conv_light@block3+bottleneck@block1,epoch=2")
    assert plan.start_epoch == 2 and PlanTamiyo.parse("conv_light@block3").start_epoch == 0
    taken = []
    for epoch in range(4):
        action = plan.decide(_obs(model, _signals(epoch=epoch))).action
        model.apply(action)
        taken.append((action.op, None if action.op is Op.WAIT else spec.slots[action.slot]))
    assert taken == [(Op.WAIT, None), (Op.WAIT, None), (Op.GERMINATE, "block3"), (Op.GERMINATE, "block1")]


@pytest.mark.parametrize("text", ["", "conv_light", "conv_light@", "@block1", "a@b@c", "conv_light@block3+",
                                  "conv_light@block3,epoch=x", "conv_light@block3,at=2", "conv_light@block3,"])
def test_plan_parse_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="blueprint@slot"):
        PlanTamiyo.parse(text)


def test_plan_names_what_the_plane_lacks():
    model = tiny_model()
    with pytest.raises(ValueError, match="blueprint 'nonexistent'"):
        PlanTamiyo.parse("nonexistent@block1").decide(_obs(model, _signals(epoch=0)))
    with pytest.raises(ValueError, match="slot 'block9'"):
        PlanTamiyo.parse("conv_light@block9").decide(_obs(model, _signals(epoch=0)))
