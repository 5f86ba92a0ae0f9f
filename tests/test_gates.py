"""Quality gates (permissive vs strict), illegal commands, the embargo clock, and config validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from _support import EventLog, advance_to, tiny_model
from esper.kasmina import GateClosedError, IllegalCommandError
from esper.kasmina.config import GATE_PROFILES, BlendChoices, GateConfig, KasminaConfig
from esper.kasmina.hosts import CNNHostConfig
from esper.leyline import Op, Stage, is_legal
from esper.leyline.telemetry import GateEvent

STRICT = KasminaConfig(gate_profile="strict")
PERMISSIVE = KasminaConfig(gate_profile="permissive")


def _assert_refused(model, slot: str, gate: str, match: str, log: EventLog | None = None) -> None:
    """ADVANCE must raise GateClosedError naming the gate and the slot, and change nothing."""
    before, counts = model.manifest(), model.param_counts()
    assert not model.slot(slot).report().gate_open
    masks = model.masks()
    assert not (masks.op[Op.ADVANCE] and masks.slot[Op.ADVANCE, model.action_spec.slots.index(slot)])
    with pytest.raises(GateClosedError, match=match) as info:
        model.advance(slot)
    assert gate in str(info.value) and repr(slot) in str(info.value)
    assert model.manifest() == before and model.param_counts() == counts
    if log is not None:
        last = [e for e in log.events if isinstance(e, GateEvent)][-1]
        assert (last.gate, last.passed, last.slot) == (gate, False, slot)


def test_strict_g2_needs_min_training_epochs():
    model, log = tiny_model(STRICT), EventLog()
    model.listeners.append(log)
    model.germinate("block1", "conv_light", tempo=3)
    model.advance("block1")  # G1: the germination probe passed
    slot = model.slot("block1")
    slot.record(grad_norm=0.5)
    need = GATE_PROFILES["strict"].min_training_epochs
    assert need >= 1
    for _ in range(need):
        _assert_refused(model, "block1", "G2", "min_training_epochs", log)
        model.step_epoch()
    assert slot.report().gate_open
    assert model.advance("block1") is Stage.BLENDING
    gate_events = [e for e in log.events if isinstance(e, GateEvent) and e.gate == "G2"]
    assert gate_events[-1].passed


def test_strict_g2_needs_a_recorded_gradient():
    model = tiny_model(STRICT)
    model.germinate("block1", "norm", tempo=3)
    model.advance("block1")
    for _ in range(GATE_PROFILES["strict"].min_training_epochs):
        model.step_epoch()
    _assert_refused(model, "block1", "G2", "grad norm")
    model.slot("block1").record(grad_norm=float("nan"))
    _assert_refused(model, "block1", "G2", "not finite")
    model.slot("block1").record(grad_norm=1e-3)
    assert model.advance("block1") is Stage.BLENDING


def test_permissive_g2_passes_at_once():
    model = tiny_model(PERMISSIVE)
    model.germinate("block1", "norm", tempo=3)
    model.advance("block1")
    assert model.advance("block1") is Stage.BLENDING


@pytest.mark.parametrize("config", [STRICT, PERMISSIVE], ids=["strict", "permissive"])
def test_g3_refuses_while_alpha_below_one(config):
    model = tiny_model(config)
    model.germinate("block1", "norm", tempo=3, curve="sigmoid")
    slot = model.slot("block1")
    model.advance("block1")
    slot.record(grad_norm=1.0)
    while slot.stage is Stage.TRAINING:
        if slot.report().gate_open:
            model.advance("block1")
        else:
            model.step_epoch()
    assert slot.stage is Stage.BLENDING and slot.alpha == 0.0
    for _ in range(3):
        _assert_refused(model, "block1", "G3", "blend incomplete")
        model.step_epoch()
    assert slot.alpha == 1.0
    assert model.advance("block1") is Stage.HOLDING


def _strict_holding(model, slot="block1"):
    model.germinate(slot, "conv_light", tempo=3)
    model.slot(slot).record(grad_norm=1.0)
    model.advance(slot)
    for _ in range(GATE_PROFILES["strict"].min_training_epochs):
        model.step_epoch()
    model.advance(slot)
    for _ in range(3):
        model.step_epoch()
    model.advance(slot)
    assert model.slot(slot).stage is Stage.HOLDING


def test_strict_g4_needs_probation_and_a_positive_contribution():
    model, log = tiny_model(STRICT), EventLog()
    model.listeners.append(log)
    _strict_holding(model)
    slot = model.slot("block1")
    slot.record(contribution=0.05)
    _assert_refused(model, "block1", "G4", "min_holding_epochs", log)  # probation not served yet
    for _ in range(GATE_PROFILES["strict"].min_holding_epochs):
        model.step_epoch()
    assert model.slot("block1").stage is Stage.HOLDING

    fresh = tiny_model(STRICT)
    _strict_holding(fresh)
    for _ in range(GATE_PROFILES["strict"].min_holding_epochs):
        fresh.step_epoch()
    _assert_refused(fresh, "block1", "G4", "no counterfactual contribution")
    fresh.slot("block1").record(contribution=-0.01)
    _assert_refused(fresh, "block1", "G4", "min_contribution")
    fresh.slot("block1").record(contribution=0.02)
    assert fresh.advance("block1") is Stage.FOSSILIZED
    assert fresh.param_counts().fossilized == fresh.slot("block1").seed_params > 0

    assert model.advance("block1") is Stage.FOSSILIZED


def test_permissive_g4_accepts_unmeasured_and_mildly_negative_contributions():
    for contribution in (None, -0.5):
        model = tiny_model(PERMISSIVE)
        model.germinate("block2", "norm", tempo=1)
        advance_to(model, "block2", Stage.HOLDING)
        if contribution is not None:
            model.slot("block2").record(contribution=contribution)
        assert model.advance("block2") is Stage.FOSSILIZED


def test_strict_g0_refuses_oversized_blueprints_and_masks_them_out():
    model = tiny_model(STRICT)
    spec = model.action_spec
    i, j = spec.slots.index("block3"), spec.blueprints.index("conv_heavy")
    assert not spec.blueprint_allowed[i][j]
    assert not model.masks().blueprint[i, j]
    before = model.manifest()
    with pytest.raises(GateClosedError, match="G0"):
        model.germinate("block3", "conv_heavy")
    assert model.manifest() == before and model.slot("block3").seed is None
    assert sum(p.numel() for p in model.slot("block3").parameters()) == 0


# ------------------------------------------------------------------------------------------ illegal commands


def test_advance_from_dormant_is_illegal_and_names_the_slot():
    model = tiny_model()
    before = model.manifest()
    with pytest.raises(IllegalCommandError, match="'block2'") as info:
        model.advance("block2")
    assert not isinstance(info.value, GateClosedError)
    assert model.manifest() == before


def test_cull_from_fossilized_and_dormant_is_illegal():
    model = tiny_model()
    with pytest.raises(IllegalCommandError, match="'block1'"):
        model.cull("block1")
    model.germinate("block1", "norm", tempo=1)
    advance_to(model, "block1", Stage.FOSSILIZED)
    before, counts = model.manifest(), model.param_counts()
    with pytest.raises(IllegalCommandError, match="'block1'"):
        model.cull("block1")
    assert model.manifest() == before and model.param_counts() == counts
    with pytest.raises(IllegalCommandError, match="'block1'"):
        model.advance("block1")


def test_germinate_twice_is_illegal():
    model = tiny_model()
    model.germinate("block3", "attention", tempo=5, curve="cosine")
    before, counts = model.manifest(), model.param_counts()
    seed = model.slot("block3").seed
    with pytest.raises(IllegalCommandError, match="'block3'"):
        model.germinate("block3", "norm", tempo=3)
    assert model.manifest() == before and model.param_counts() == counts
    assert model.slot("block3").seed is seed


@pytest.mark.parametrize("cull_from", [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING], ids=lambda s: s.name)
def test_cull_frees_the_seed_from_every_live_stage(cull_from):
    model, log = tiny_model(), EventLog()
    model.listeners.append(log)
    model.germinate("block2", "depthwise", tempo=2)
    advance_to(model, "block2", cull_from)
    slot = model.slot("block2")
    model.cull("block2", reason="test")
    assert slot.stage is Stage.CULLED and slot.seed is None and slot.seed_params == 0 and slot.alpha == 0.0
    assert sum(p.numel() for p in slot.parameters()) == 0
    assert model.param_counts().active_seeds == 0
    assert (log.stage_changes()[-1].from_stage, log.stage_changes()[-1].to_stage) == (cull_from.name, "CULLED")


def test_germinate_rejects_bad_tempo_and_disabled_blueprint():
    model = MorphogeneticModel_with(blueprints=("norm",))
    before = model.manifest()
    with pytest.raises(IllegalCommandError, match="tempo"):
        model.germinate("block1", "norm", tempo=0)
    with pytest.raises(IllegalCommandError, match="conv_light"):
        model.germinate("block1", "conv_light")
    assert model.manifest() == before


def test_germinate_rejects_unknown_curve_without_side_effects():
    """An unknown curve must be refused like any illegal command and leave the slot DORMANT and empty."""
    model = tiny_model()
    before, counts = model.manifest(), model.param_counts()
    with pytest.raises((IllegalCommandError, ValueError), match="zigzag"):
        model.germinate("block1", "norm", tempo=3, curve="zigzag")
    assert model.manifest() == before and model.param_counts() == counts
    slot = model.slot("block1")
    assert slot.seed is None
    assert sum(p.numel() for p in slot.parameters()) == 0


def MorphogeneticModel_with(**kasmina):
    from _support import tiny_host
    from esper.kasmina import MorphogeneticModel

    return MorphogeneticModel(tiny_host(), KasminaConfig(**kasmina))


# ------------------------------------------------------------------------------------------ embargo


@pytest.mark.parametrize("embargo", [0, 1, 3])
def test_embargo_clock(embargo):
    """After a cull the slot goes CULLED → EMBARGOED → RESETTING → DORMANT by itself: one tick leaves CULLED,
    `embargo_epochs` ticks are served in EMBARGOED (`embargo_remaining` counts them down: it is the number of
    ticks left before the slot resets), one tick resets — embargo_epochs + 2 ticks in all. With embargo 0 the
    slot passes straight through EMBARGOED on the first tick (else 0 would mean the same as 1)."""
    gates = GateConfig(max_seed_param_ratio=2.0, min_training_epochs=0, min_holding_epochs=0, embargo_epochs=embargo)
    model, log = tiny_model(KasminaConfig(gate_profile="custom", gates=gates)), EventLog()
    model.listeners.append(log)
    model.germinate("block2", "depthwise", tempo=2)
    advance_to(model, "block2", Stage.TRAINING)
    slot = model.slot("block2")
    model.cull("block2")
    assert slot.stage is Stage.CULLED

    stages = []
    for _ in range(embargo + 2):
        # Still cooling down: germination refused, and masked out.
        before = model.manifest()
        with pytest.raises(IllegalCommandError, match="'block2'"):
            model.germinate("block2", "norm")
        assert model.manifest() == before
        masks = model.masks()
        assert not (masks.op[Op.GERMINATE] and masks.slot[Op.GERMINATE, 1])
        model.step_epoch()
        stages.append(slot.stage)
        if slot.stage is Stage.EMBARGOED:
            assert slot.report().embargo_remaining == embargo + 1 - len(stages)
    assert stages == [Stage.EMBARGOED] * embargo + [Stage.RESETTING, Stage.DORMANT], stages

    changes = [(e.from_stage, e.to_stage) for e in log.stage_changes() if e.slot == "block2"]
    assert changes[-3:] == [("CULLED", "EMBARGOED"), ("EMBARGOED", "RESETTING"), ("RESETTING", "DORMANT")]
    assert all(is_legal(Stage[a], Stage[b]) for a, b in changes)

    # The slot is clean and reusable.
    assert slot.manifest().blueprint is None and slot.manifest().tempo is None and slot.alpha == 0.0
    assert model.masks().slot[Op.GERMINATE, 1]
    model.germinate("block2", "norm", tempo=3, curve="cosine")
    assert slot.stage is Stage.GERMINATED and slot.blueprint == "norm"


# ------------------------------------------------------------------------------------------ config validation


def _fails_naming(field: str, build) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert field in str(info.value), str(info.value)


def test_extra_fields_are_rejected():
    _fails_naming("bogus", lambda: KasminaConfig(bogus=1))
    _fails_naming("typo_epochs", lambda: GateConfig(typo_epochs=2))
    _fails_naming("depth", lambda: CNNHostConfig(depth=3))


def test_negative_embargo_and_thresholds_are_rejected():
    _fails_naming("embargo_epochs", lambda: GateConfig(embargo_epochs=-1))
    _fails_naming("min_training_epochs", lambda: GateConfig(min_training_epochs=-2))
    _fails_naming("max_seed_param_ratio", lambda: GateConfig(max_seed_param_ratio=0))
    _fails_naming("min_seed_grad_norm", lambda: GateConfig(min_seed_grad_norm=float("nan")))
    cfg = GateConfig()
    with pytest.raises(ValidationError, match="embargo_epochs"):
        cfg.embargo_epochs = -1  # validate_assignment
    assert cfg.embargo_epochs == GateConfig().embargo_epochs


def test_custom_profile_needs_gates_and_named_profiles_forbid_them():
    _fails_naming("gates", lambda: KasminaConfig(gate_profile="custom"))
    _fails_naming("gates", lambda: KasminaConfig(gate_profile="strict", gates=GateConfig()))
    _fails_naming("gate_profile", lambda: KasminaConfig(gate_profile="lenient"))
    custom = GateConfig(embargo_epochs=4)
    assert KasminaConfig(gate_profile="custom", gates=custom).gate_config() == custom
    assert KasminaConfig(gate_profile="strict").gate_config() == GATE_PROFILES["strict"]


def test_other_config_validation():
    _fails_naming("widths", lambda: CNNHostConfig(preset="custom"))
    _fails_naming("widths", lambda: CNNHostConfig(preset="custom", widths=(8, 0)))
    _fails_naming("tempos", lambda: BlendChoices(tempos=(0, 3)))
    _fails_naming("tempos", lambda: BlendChoices(tempos=()))
    _fails_naming("blueprints", lambda: KasminaConfig(blueprints=()))


def test_unknown_blueprint_in_config_fails_at_model_construction():
    from esper.leyline.experiment import ConfigError

    with pytest.raises(ConfigError, match=r"kasmina.blueprints: unknown blueprint\(s\) \['nope'\]"):
        MorphogeneticModel_with(blueprints=("norm", "nope"))
