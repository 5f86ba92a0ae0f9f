"""The transition table, α schedules, and the one mask function (leyline only, no torch)."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper.leyline import (
    ADVANCE_TARGET,
    AUTOMATIC_STAGES,
    CONTRIBUTING_STAGES,
    LIVE_STAGES,
    OP_USES,
    TRANSITIONS,
    ActionMasks,
    ActionSpec,
    BlendCurve,
    FactoredAction,
    Op,
    SlotReport,
    Stage,
    alpha_at,
    compute_masks,
    is_legal,
)

# ---------------------------------------------------------------------------------------------- the table


def test_table_covers_every_stage_and_only_stages():
    assert set(TRANSITIONS) == set(Stage)
    for src, dsts in TRANSITIONS.items():
        assert all(isinstance(d, Stage) for d in dsts), src
        assert src not in dsts, f"{src.name} must not loop onto itself"


def test_every_advance_target_is_legal_and_advance_is_only_from_live_stages():
    assert ADVANCE_TARGET, "the happy path must not be empty"
    for src, dst in ADVANCE_TARGET.items():
        assert is_legal(src, dst), (src, dst)
    assert set(ADVANCE_TARGET) <= LIVE_STAGES
    # The happy path is one chain GERMINATED → … → FOSSILIZED.
    stage, path = Stage.GERMINATED, [Stage.GERMINATED]
    while stage in ADVANCE_TARGET:
        stage = ADVANCE_TARGET[stage]
        path.append(stage)
    assert path == [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED]


def test_no_stage_is_terminal_a_fossil_can_only_leave_through_an_audit():
    assert all(TRANSITIONS[s] for s in Stage)
    assert TRANSITIONS[Stage.FOSSILIZED] == {Stage.WITHERING}
    assert TRANSITIONS[Stage.WITHERING] == {Stage.FOSSILIZED, Stage.CULLED}


def test_every_live_stage_and_a_withering_fossil_can_be_culled_and_nothing_else_can():
    for s in Stage:
        assert is_legal(s, Stage.CULLED) == (s in LIVE_STAGES or s is Stage.WITHERING), s


def test_automatic_stages_have_exactly_one_exit_and_lead_back_to_dormant():
    for s in AUTOMATIC_STAGES:
        assert len(TRANSITIONS[s]) == 1, s
    stage, seen = Stage.CULLED, []
    while stage is not Stage.DORMANT:
        seen.append(stage)
        (stage,) = TRANSITIONS[stage]
    assert seen == [Stage.CULLED, Stage.EMBARGOED, Stage.RESETTING]


def test_every_stage_is_reachable_from_dormant_and_can_reach_a_resting_stage():
    reach, todo = {Stage.DORMANT}, deque([Stage.DORMANT])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert reach == set(Stage)
    # From every stage either FOSSILIZED or DORMANT (a reusable slot) is reachable: no dead ends.
    for s in Stage:
        seen, todo = {s}, deque([s])
        while todo:
            for nxt in TRANSITIONS[todo.popleft()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert Stage.FOSSILIZED in seen or Stage.DORMANT in seen, s


def test_is_legal_agrees_with_the_table_for_all_pairs():
    for src, dst in itertools.product(Stage, Stage):
        assert is_legal(src, dst) == (dst in TRANSITIONS[src])


def test_contributing_stages_hold_a_seed():
    assert CONTRIBUTING_STAGES == {Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED, Stage.WITHERING}
    assert not (CONTRIBUTING_STAGES & AUTOMATIC_STAGES)


# ---------------------------------------------------------------------------------------------- α schedules


@pytest.mark.parametrize("curve", list(BlendCurve))
@pytest.mark.parametrize("tempo", [1, 2, 3, 5, 8, 13, 100])
def test_alpha_ends_are_exact(curve, tempo):
    assert alpha_at(0, tempo, curve) == 0.0
    assert alpha_at(-3, tempo, curve) == 0.0
    for step in (tempo, tempo + 1, 10 * tempo):
        assert alpha_at(step, tempo, curve) == 1.0


@given(tempo=st.integers(1, 60), curve=st.sampled_from(list(BlendCurve)))
def test_alpha_is_monotone_and_in_unit_interval(tempo, curve):
    values = [alpha_at(step, tempo, curve) for step in range(0, tempo + 3)]
    assert all(0.0 <= a <= 1.0 for a in values)
    assert all(a <= b for a, b in zip(values, values[1:])), values
    # Strictly inside (0, 1) mid-ramp, so the blend really is gradual.
    assert all(0.0 < a < 1.0 for a in values[1:tempo])


def test_alpha_curves_differ_mid_ramp():
    mid = {c: alpha_at(1, 4, c) for c in BlendCurve}
    assert mid[BlendCurve.LINEAR] == pytest.approx(0.25)
    assert mid[BlendCurve.COSINE] == pytest.approx(0.5 - 0.5 * np.cos(np.pi / 4))
    assert len(set(mid.values())) == len(BlendCurve)


@pytest.mark.parametrize("tempo", [0, -1])
def test_alpha_rejects_non_positive_tempo(tempo):
    with pytest.raises(ValueError, match="tempo"):
        alpha_at(1, tempo, BlendCurve.LINEAR)


# ---------------------------------------------------------------------------------------------- masks


@st.composite
def specs_and_reports(draw):
    n_slots = draw(st.integers(1, 4))
    n_bps = draw(st.integers(1, 4))
    tempos = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True)))
    curves = tuple(draw(st.lists(st.sampled_from(list(BlendCurve)), min_size=1, max_size=3, unique=True)))
    allowed = tuple(
        tuple(draw(st.booleans()) for _ in range(n_bps)) for _ in range(n_slots)
    )
    spec = ActionSpec(
        slots=tuple(f"s{i}" for i in range(n_slots)),
        blueprints=tuple(f"bp{j}" for j in range(n_bps)),
        tempos=tempos,
        curves=curves,
        blueprint_allowed=allowed,
        audit=draw(st.booleans()),
    )
    reports = [
        SlotReport(name=name, stage=draw(st.sampled_from(list(Stage))), gate_open=draw(st.booleans()))
        for name in spec.slots
    ]
    return spec, reports


def all_actions(spec: ActionSpec):
    n_op, n_slot, n_bp, n_blend = spec.nvec
    for op, s, b, bl in itertools.product(range(n_op), range(n_slot), range(n_bp), range(n_blend)):
        yield FactoredAction(Op(op), s, b, bl)


def slot_may(op: Op, report: SlotReport, allowed_row, audit: bool = False) -> bool:
    """What the transition table and the gates say, restated independently of compute_masks (`audit`: the layout
    offers WITHER/REVIVE, and CULL of a withering fossil whose gate G6 is open)."""
    if op is Op.GERMINATE:
        return report.stage is Stage.DORMANT and any(allowed_row)
    if op is Op.ADVANCE:
        return report.stage in ADVANCE_TARGET and report.gate_open
    if op is Op.CULL:
        return report.stage in LIVE_STAGES or (audit and report.stage is Stage.WITHERING and report.gate_open)
    if op is Op.WITHER:
        return audit and report.stage is Stage.FOSSILIZED
    if op is Op.REVIVE:
        return audit and report.stage is Stage.WITHERING
    raise AssertionError(op)


@given(specs_and_reports())
def test_masks_never_allow_what_the_table_forbids(data):
    spec, reports = data
    masks = compute_masks(spec, reports)
    n_op, n_slot, n_bp, n_blend = spec.nvec
    assert masks.op.shape == (n_op,) and masks.slot.shape == (n_op, n_slot)
    assert masks.blueprint.shape == (n_slot, n_bp) and masks.blend.shape == (n_blend,)

    assert masks.op[Op.WAIT] and masks.allows(FactoredAction(Op.WAIT))
    assert n_op == (6 if spec.audit else 4)
    for op in spec.ops[1:]:
        legal_slots = [slot_may(op, r, spec.blueprint_allowed[i], spec.audit) for i, r in enumerate(reports)]
        # The op is offered exactly when some slot can take it …
        assert bool(masks.op[op]) == any(legal_slots), op
        # … and then exactly on those slots.
        if masks.op[op]:
            assert masks.slot[op].tolist() == legal_slots, op

    for action in all_actions(spec):
        if not masks.allows(action):
            continue
        uses = OP_USES[action.op]
        for head in ("slot", "blueprint", "blend"):
            if head not in uses:
                assert getattr(action, head) == 0, (action, head)
        if action.op is Op.WAIT:
            continue
        r = reports[action.slot]
        if action.op is Op.GERMINATE:
            assert r.stage is Stage.DORMANT
            assert spec.blueprint_allowed[action.slot][action.blueprint]
            assert is_legal(r.stage, Stage.GERMINATED)
        elif action.op is Op.ADVANCE:
            assert r.stage in ADVANCE_TARGET and r.gate_open
            assert is_legal(r.stage, ADVANCE_TARGET[r.stage])
        elif action.op is Op.CULL:
            assert r.stage in LIVE_STAGES or (spec.audit and r.stage is Stage.WITHERING and r.gate_open)
            assert is_legal(r.stage, Stage.CULLED)
        else:
            assert spec.audit
            target = Stage.WITHERING if action.op is Op.WITHER else Stage.FOSSILIZED
            assert is_legal(r.stage, target)


@given(specs_and_reports())
def test_masks_are_complete_and_well_formed(data):
    """Every legal command is offered, and every head a sampler would read has at least one legal choice."""
    spec, reports = data
    masks = compute_masks(spec, reports)
    allowed = {a for a in all_actions(spec) if masks.allows(a)}
    for i, r in enumerate(reports):
        for op in spec.ops[2:]:
            if slot_may(op, r, spec.blueprint_allowed[i], spec.audit):
                assert FactoredAction(op, i) in allowed
        for b, ok in enumerate(spec.blueprint_allowed[i]):
            for blend in range(spec.nvec[3]):
                expect = r.stage is Stage.DORMANT and ok
                assert (FactoredAction(Op.GERMINATE, i, b, blend) in allowed) == expect
    for op in spec.ops:
        if not masks.op[op]:
            continue
        assert masks.slot[op].any(), op
        for s in np.flatnonzero(masks.slot[op]):
            slot_m, bp_m, blend_m = masks.head_masks(int(op), int(s))
            assert slot_m.any() and bp_m.any() and blend_m.any(), (op, s)


@given(specs_and_reports())
def test_flat_mask_round_trips(data):
    spec, reports = data
    masks = compute_masks(spec, reports)
    flat = masks.flat()
    assert flat.dtype == np.float32 and flat.shape == (spec.mask_size,)
    assert set(np.unique(flat).tolist()) <= {0.0, 1.0}
    back = ActionMasks.from_flat(spec, flat)
    for field in ("op", "slot", "blueprint", "blend"):
        a, b = getattr(masks, field), getattr(back, field)
        assert a.shape == b.shape and np.array_equal(a, b), field
    assert np.array_equal(back.flat(), flat)
    with pytest.raises(ValueError):
        ActionMasks.from_flat(spec, flat[:-1])


@given(specs_and_reports())
def test_compute_masks_is_pure(data):
    spec, reports = data
    a, b = compute_masks(spec, reports), compute_masks(spec, list(reports))
    assert np.array_equal(a.flat(), b.flat())
    # Mutating the result must not leak into the spec (the blueprint mask is a copy).
    a.blueprint[...] = ~a.blueprint
    assert np.array_equal(compute_masks(spec, reports).blueprint, np.asarray(spec.blueprint_allowed, dtype=bool))


def test_compute_masks_requires_reports_in_slot_order():
    spec = ActionSpec(("a", "b"), ("x",), (3,), (BlendCurve.LINEAR,), ((True,), (True,)))
    with pytest.raises(ValueError):
        compute_masks(spec, [SlotReport("b", Stage.DORMANT), SlotReport("a", Stage.DORMANT)])
    with pytest.raises(ValueError):
        compute_masks(spec, [SlotReport("a", Stage.DORMANT)])


@given(
    op=st.sampled_from(list(Op)),
    slot=st.integers(0, 2**31),
    blueprint=st.integers(0, 2**31),
    blend=st.integers(0, 2**31),
)
def test_factored_action_round_trips(op, slot, blueprint, blend):
    a = FactoredAction(op, slot, blueprint, blend)
    arr = a.as_array()
    assert arr.dtype == np.int64 and arr.shape == (4,)
    back = FactoredAction.from_array(arr)
    assert back == a and isinstance(back.op, Op)
    assert FactoredAction.from_array(arr.tolist()) == a


def test_factored_action_rejects_wrong_length_and_unknown_op():
    with pytest.raises(ValueError):
        FactoredAction.from_array([0, 0, 0])
    with pytest.raises(ValueError):
        FactoredAction.from_array([len(Op), 0, 0, 0])


@given(specs_and_reports())
def test_action_spec_dict_round_trip_and_blend_index(data):
    spec, _ = data
    assert ActionSpec.from_dict(spec.to_dict()) == spec
    for i in range(spec.nvec[3]):
        tempo, curve = spec.blend_choice(i)
        assert spec.blend_index(tempo, curve) == i


def test_action_spec_validates_shape():
    with pytest.raises(ValueError):
        ActionSpec(("a",), ("x", "y"), (3,), (BlendCurve.LINEAR,), ((True,),))
    with pytest.raises(ValueError):
        ActionSpec(("a",), ("x",), (), (BlendCurve.LINEAR,), ((True,),))


@given(specs_and_reports(), st.data())
def test_allows_rejects_out_of_range_indices(data, draw):
    """`allows` is the legality check controllers and servers call directly, so an index outside a head's range
    is never legal: not even a negative one that numpy would read from the end of a mask (for WAIT, slot = −1
    is an irrelevant head that is not 0), and too-large ones must answer False rather than raise."""
    spec, reports = data
    masks = compute_masks(spec, reports)
    sizes = spec.nvec[1:]
    head = draw.draw(st.integers(0, 2), label="head")
    bad = draw.draw(st.sampled_from([-1, -sizes[head], sizes[head], sizes[head] + 3]), label="bad index")
    for op in spec.ops:
        values = [0, 0, 0]
        values[head] = bad
        action = FactoredAction(op, *values)
        try:
            allowed = masks.allows(action)
        except IndexError:
            allowed = "IndexError"
        assert allowed is False, (action, allowed)


# ------------------------------------------------------------------------------------------------ auto-advance
def test_auto_advance_runs_the_lifecycle_without_advance_commands():
    from _support import open_gates, tiny_model

    model = tiny_model(open_gates().model_copy(update={"auto_advance": True}))
    spec = model.action_spec
    block3 = spec.slots.index("block3")
    model.apply(FactoredAction(Op.GERMINATE, block3, spec.blueprints.index("conv_light"), 0))
    assert model.slot("block3").stage is Stage.TRAINING, "the open G1 gate was passed right after germination"
    seen = [model.slot("block3").stage]
    for _ in range(20):
        model.apply(FactoredAction(Op.WAIT))
        model.step_epoch()
        seen.append(model.slot("block3").stage)
    assert seen[-1] is Stage.FOSSILIZED
    assert [s for i, s in enumerate(seen) if i == 0 or s is not seen[i - 1]] == [
        Stage.TRAINING, Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED], "one stage per decision, in order"
    assert all(model.slot(n).stage is Stage.DORMANT for n in spec.slots if n != "block3")


def test_without_auto_advance_seeds_wait_for_advance_commands():
    from _support import open_gates, tiny_model

    model = tiny_model(open_gates())
    spec = model.action_spec
    model.apply(FactoredAction(Op.GERMINATE, spec.slots.index("block3"), spec.blueprints.index("conv_light"), 0))
    for _ in range(5):
        model.apply(FactoredAction(Op.WAIT))
        model.step_epoch()
    assert model.slot("block3").stage is Stage.GERMINATED
    assert model.advance_open_gates() == ["block3"] and model.slot("block3").stage is Stage.TRAINING


# ------------------------------------------------------------------------------------------------ graft lifecycle
def test_graft_fossilizes_a_germinated_seed_at_once_without_changing_the_output():
    import torch
    from _support import images, tiny_model

    from esper.kasmina.config import KasminaConfig

    model = tiny_model(KasminaConfig(gate_profile="permissive", lifecycle="graft")).eval()
    spec, x = model.action_spec, images(4)
    before = model(x)
    model.apply(FactoredAction(Op.GERMINATE, spec.slots.index("block3"), spec.blueprints.index("conv_light"), 0))
    slot = model.slot("block3")
    assert slot.stage is Stage.FOSSILIZED and slot.alpha == 1.0
    assert torch.equal(model(x), before), "a zero-initialised branch grafted at α = 1 must not change the output"
    assert model.param_counts().fossilized == slot.seed_params > 0
    assert not model.masks().allows(FactoredAction(Op.CULL, spec.slots.index("block3"))), "a graft cannot be culled"


def test_graft_with_gates_that_ask_for_evidence_fails_at_start_up_naming_the_field():
    from pydantic import ValidationError

    from esper.kasmina.config import KasminaConfig

    with pytest.raises(ValidationError, match="kasmina.lifecycle='graft'.*min_training_epochs=0"):
        KasminaConfig(gate_profile="strict", lifecycle="graft")
