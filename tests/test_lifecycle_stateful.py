"""A hypothesis state machine driving a MorphogeneticModel with random commands and checking its invariants —
over the whole table, Emrakul's audits included (WITHER, REVIVE, a withered fossil's CULL)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from _support import SEED_STAGES, EventLog, images, perturb, tiny_host, tiny_model
from esper.kasmina import IllegalCommandError, MorphogeneticModel
from esper.kasmina.config import GateConfig, KasminaConfig
from esper.leyline import (ADVANCE_TARGET, CONTRIBUTING_STAGES, FOSSIL_STAGES, LIVE_STAGES, BlendCurve, FactoredAction,
                            Op, Stage, compute_masks, is_legal)

SLOT_NAMES = tuple(p.name for p in tiny_host().injection_points())
CONFIGS = {
    "permissive": KasminaConfig(gate_profile="permissive"),
    "strict": KasminaConfig(gate_profile="strict"),
    "custom": KasminaConfig(
        gate_profile="custom",
        gates=GateConfig(max_seed_param_ratio=1.0, min_training_epochs=1, min_holding_epochs=1, embargo_epochs=0),
        blend={"tempos": (1, 2), "curves": ("sigmoid",)},
    ),
    # Tamiyo's own layout offers the audits; seeds graft straight to FOSSILIZED, so audits happen often.
    "graft-audit": KasminaConfig(gate_profile="permissive", lifecycle="graft", audit_actions=True, wither_tempo=2),
}
X = images(2, seed=123)


def _model_param_count(model: MorphogeneticModel) -> int:
    return sum(p.numel() for p in model.parameters())


class LifecycleMachine(RuleBasedStateMachine):
    model: MorphogeneticModel

    @initialize(profile=st.sampled_from(sorted(CONFIGS)))
    def build(self, profile: str) -> None:
        torch.manual_seed(0)
        self.model = tiny_model(CONFIGS[profile])
        self.model.eval()  # BatchNorm on running statistics: forward passes are comparable
        self.log = EventLog()
        self.model.listeners.append(self.log)
        self.checked_events = 0
        self.failures = 0

    # -------------------------------------------------------------------------------------- helpers
    def _state(self):
        return self.model.manifest(), self.model.param_counts(), _model_param_count(self.model)

    def _run(self, command, expect_ok: bool | None = None) -> bool:
        """Run a command; if it raises IllegalCommandError nothing may have changed. Returns success."""
        before = self._state()
        try:
            command()
        except IllegalCommandError:
            assert self._state() == before, "a refused command changed the model"
            assert expect_ok is not True, "the masks/report said this command was legal"
            self.failures += 1
            return False
        assert expect_ok is not False, "the masks/report said this command was illegal, yet it ran"
        return True

    # -------------------------------------------------------------------------------------- commands
    @rule(
        slot=st.sampled_from(SLOT_NAMES),
        blueprint=st.sampled_from(("norm", "attention", "depthwise", "bottleneck", "conv_light", "conv_heavy", "mlp")),
        tempo=st.integers(-1, 6),
        curve=st.sampled_from([c.value for c in BlendCurve]),
    )
    def germinate(self, slot, blueprint, tempo, curve):
        m = self.model
        spec = m.action_spec
        i = spec.slots.index(slot)
        enabled = blueprint in spec.blueprints
        expect = (
            m.slot(slot).stage is Stage.DORMANT
            and enabled
            and spec.blueprint_allowed[i][spec.blueprints.index(blueprint)]
            and tempo >= 1
        )
        if self._run(lambda: m.germinate(slot, blueprint, tempo, curve), expect_ok=expect):
            s = m.slot(slot)
            assert s.blueprint == blueprint and s.tempo == tempo and s.seed is not None and s.seed_params > 0
            if m.config.lifecycle == "graft":  # through every gate in the same decision
                assert s.stage is Stage.FOSSILIZED and s.alpha == 1.0
            else:
                assert s.stage is Stage.GERMINATED and s.alpha == 0.0

    @rule(slot=st.sampled_from(SLOT_NAMES))
    def advance(self, slot):
        s = self.model.slot(slot)
        src, report = s.stage, s.report()
        if self._run(lambda: self.model.advance(slot), expect_ok=src in ADVANCE_TARGET and report.gate_open):
            assert s.stage is ADVANCE_TARGET[src]

    @rule(slot=st.sampled_from(SLOT_NAMES))
    def cull(self, slot):
        s = self.model.slot(slot)
        withered = s.stage is Stage.WITHERING and s.alpha == 0.0
        fossil_params, params, before = self.model.param_counts().fossilized, _model_param_count(self.model), s.seed_params
        if self._run(lambda: self.model.cull(slot), expect_ok=s.stage in LIVE_STAGES or withered):
            assert s.stage is Stage.CULLED and s.seed is None
            assert _model_param_count(self.model) == params - before
            if withered:  # the books fall by exactly the fossil's parameters
                assert self.model.param_counts().fossilized == fossil_params - before

    @rule(slot=st.sampled_from(SLOT_NAMES))
    def wither(self, slot):
        s = self.model.slot(slot)
        if self._run(lambda: self.model.wither(slot), expect_ok=s.stage is Stage.FOSSILIZED):
            assert s.stage is Stage.WITHERING and s.alpha == 1.0 and s.churn is None

    @rule(slot=st.sampled_from(SLOT_NAMES))
    def revive(self, slot):
        s = self.model.slot(slot)
        if self._run(lambda: self.model.revive(slot), expect_ok=s.stage is Stage.WITHERING):
            assert s.stage is Stage.FOSSILIZED and s.alpha == 1.0

    @precondition(lambda self: any(self.model.slot(n).stage is Stage.FOSSILIZED for n in SLOT_NAMES))
    @rule(data=st.data())
    def audit_round_trip(self, data):
        """Wither a fossil all the way: at α = 0 the model is the model without that slot, bit for bit; REVIVE
        gives back exactly the output it had as a fossil."""
        m = self.model
        slot = data.draw(st.sampled_from([n for n in SLOT_NAMES if m.slot(n).stage is Stage.FOSSILIZED]), label="fossil")
        s = m.slot(slot)
        with torch.no_grad():
            as_fossil = m(X)
        m.wither(slot)
        while s.alpha > 0:
            s.step_epoch()  # this slot's clock only: the others stay as they are
        assert s.report().gate_open, "G6 must open at α = 0"
        with torch.no_grad():
            withered = m(X)
            s.seed, kept = None, s.seed
            try:
                without = m(X)  # the slot as if it held nothing
            finally:
                s.seed = kept
        assert torch.equal(withered, without)
        m.revive(slot)
        with torch.no_grad():
            assert torch.equal(m(X), as_fossil)

    @rule(data=st.data())
    def apply_audit_action(self, data):
        """What Emrakul does: any action the audit layout allows (WITHER, REVIVE, CULL of a withered fossil …)."""
        m = self.model
        masks = compute_masks(m.audit_spec, m.reports())
        allowed = [a for a in _all_actions(m, m.audit_spec) if masks.allows(a)]
        action = data.draw(st.sampled_from(allowed), label="audit action")
        assert self._run(lambda: m.apply(action, audit=True), expect_ok=True)

    @rule()
    def manifest_and_snapshot_round_trip(self):
        """A fresh model rebuilt from the manifest and weights, and a snapshot restored after a change, are the
        model they were taken from: same manifest, same output (whatever the stages, WITHERING included)."""
        m = self.model
        snap = m.snapshot()
        with torch.no_grad():
            out = m(X)
        fresh = MorphogeneticModel(copy.deepcopy(m.host), m.config)
        fresh.load_manifest(m.manifest())
        fresh.load_state_dict(m.state_dict())
        fresh.eval()
        with torch.no_grad():
            assert fresh.manifest() == m.manifest() and torch.equal(fresh(X), out)
        m.step_epoch()
        for n in SLOT_NAMES:
            if m.slot(n).stage is Stage.FOSSILIZED:
                m.wither(n)
        before = {n: m.slot(n).stage for n in SLOT_NAMES}
        m.restore(snap)
        for n in SLOT_NAMES:  # as the Governor does: the rewind is visible in the stage stream
            if m.slot(n).stage is not before[n]:
                m.slot(n).announce_restore(before[n])
        with torch.no_grad():
            assert m.manifest() == snap["manifest"] and torch.equal(m(X), out)

    @precondition(lambda self: any(self.model.slot(n).report().gate_open for n in SLOT_NAMES))
    @rule(data=st.data())
    def advance_ready(self, data):
        """Advance a slot whose gate is open (uniformly random slots rarely get far along the happy path)."""
        ready = [n for n in SLOT_NAMES if self.model.slot(n).report().gate_open]
        slot = data.draw(st.sampled_from(ready), label="ready slot")
        self.advance(slot)
        assert self.model.slot(slot).stage is not Stage.DORMANT

    @precondition(lambda self: any(self.model.slot(n).stage in ADVANCE_TARGET for n in SLOT_NAMES))
    @rule(data=st.data())
    def push_along(self, data):
        """What a patient controller does: feed the slot's gates evidence and tick epochs until it can advance,
        then advance it (keeps runs reaching BLENDING, HOLDING and FOSSILIZED under every profile)."""
        live = [n for n in SLOT_NAMES if self.model.slot(n).stage in ADVANCE_TARGET]
        slot = data.draw(st.sampled_from(live), label="slot to push")
        s = self.model.slot(slot)
        for _ in range(12):
            if s.report().gate_open:
                break
            s.record(grad_norm=0.5, contribution=0.02)
            if not s.report().gate_open:
                self.step_epoch(1)
        assert s.report().gate_open, (slot, s.stage, s.next_gate())
        src = s.stage
        self.advance(slot)
        assert s.stage is ADVANCE_TARGET[src]

    @rule(ticks=st.integers(1, 4))
    def step_epoch(self, ticks):
        for _ in range(ticks):
            before = {n: self.model.slot(n).stage for n in SLOT_NAMES}
            first = len(self.log.stage_changes())
            self.model.step_epoch()  # never refused
            tick = self.log.stage_changes()[first:]
            for n, src in before.items():
                # One tick may chain automatic steps (CULLED→EMBARGOED→RESETTING with no embargo):
                # every step must be legal and the chain must end where the slot now is.
                stage = src
                for e in (e for e in tick if e.slot == n):
                    assert e.from_stage == stage.name and is_legal(stage, Stage[e.to_stage])
                    stage = Stage[e.to_stage]
                assert stage == self.model.slot(n).stage

    @rule()
    def feed_evidence(self):
        """What a trainer would record: a healthy gradient norm and a positive contribution, for every slot."""
        for n in SLOT_NAMES:
            self.model.slot(n).record(grad_norm=0.5, contribution=0.02)

    @rule(
        slot=st.sampled_from(SLOT_NAMES),
        contribution=st.none() | st.floats(-0.2, 0.2),
        grad_norm=st.none() | st.floats(0.0, 3.0) | st.just(float("nan")),
    )
    def record(self, slot, contribution, grad_norm):
        self.model.slot(slot).record(contribution=contribution, grad_norm=grad_norm)

    @rule(data=st.data())
    def apply_action(self, data):
        n_op, n_slot, n_bp, n_blend = self.model.action_spec.nvec
        action = FactoredAction(
            Op(data.draw(st.integers(0, n_op - 1), label="op")),
            data.draw(st.integers(0, n_slot - 1), label="slot"),
            data.draw(st.integers(0, n_bp - 1), label="blueprint"),
            data.draw(st.integers(0, n_blend - 1), label="blend"),
        )
        self._run(lambda: self.model.apply(action), expect_ok=self.model.masks().allows(action))

    @rule(data=st.data())
    def apply_allowed_action(self, data):
        """Pick among the actions the masks allow (random actions are mostly masked out)."""
        masks = self.model.masks()
        allowed = [a for a in _all_actions(self.model) if masks.allows(a)]
        assert FactoredAction(Op.WAIT) in allowed
        action = data.draw(st.sampled_from(allowed), label="allowed action")
        assert self._run(lambda: self.model.apply(action), expect_ok=True)

    @precondition(lambda self: any(self.model.slot(n).seed is not None for n in SLOT_NAMES))
    @rule(seed=st.integers(0, 1000))
    def perturb_seeds(self, seed):
        """Give the seeds non-trivial weights (as training would), so contributions are visible."""
        for n in SLOT_NAMES:
            if self.model.slot(n).seed is not None:
                perturb(self.model.slot(n).seed, scale=0.1, seed=seed)

    @rule()
    def forward(self):
        with torch.no_grad():
            out = self.model(X)
            host_out = self.model.host(X)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        contributing = [
            n for n in SLOT_NAMES
            if self.model.slot(n).stage in CONTRIBUTING_STAGES and self.model.slot(n).alpha > 0
        ]
        if not contributing:
            assert torch.equal(out, host_out), "no contributing seed, yet the output differs from the host's"

    # -------------------------------------------------------------------------------------- invariants
    @invariant()
    def stage_changes_are_legal(self):
        changes = self.log.stage_changes()
        for e in changes[self.checked_events:]:  # a snapshot restore rewinds time: it is announced, not a step
            assert e.reason == "restored from snapshot" or is_legal(Stage[e.from_stage], Stage[e.to_stage]), e
        self.checked_events = len(changes)
        last = {}
        for e in changes:
            assert last.get(e.slot, "DORMANT") == e.from_stage, ("events must chain", e)
            last[e.slot] = e.to_stage
        for n in SLOT_NAMES:
            assert last.get(n, "DORMANT") == self.model.slot(n).stage.name

    @invariant()
    def seeds_and_parameters_agree_with_stages(self):
        m = self.model
        for n in SLOT_NAMES:
            s = m.slot(n)
            own = sum(p.numel() for p in s.parameters())
            assert (s.seed is not None) == (s.stage in SEED_STAGES), (n, s.stage)
            if s.seed is None:
                assert s.seed_params == 0 and s.report().seed_params == 0 and own == 0, n
            else:
                assert s.report().seed_params == s.seed_params == own > 0
            if s.stage is Stage.DORMANT:
                assert own == 0 and s.blueprint is None and s.alpha == 0.0 and s.embargo_remaining == 0
            assert 0.0 <= s.alpha <= 1.0
            if s.stage in (Stage.HOLDING, Stage.FOSSILIZED):
                assert s.alpha == 1.0
            if s.stage is Stage.WITHERING:  # linear 1 → 0 over wither_tempo ticks, exactly 0 at the end
                tempo = m.config.wither_tempo
                assert s.alpha == pytest.approx(1.0 - min(s.epochs_in_stage, tempo) / tempo, abs=1e-12)
            if s.stage not in CONTRIBUTING_STAGES:
                assert s.alpha == 0.0, (n, s.stage, s.alpha)
        counts = m.param_counts()
        assert counts.total == _model_param_count(m)
        assert counts.active_seeds == sum(m.slot(n).seed_params for n in SLOT_NAMES if m.slot(n).stage in LIVE_STAGES)
        assert counts.fossilized == sum(m.slot(n).seed_params for n in SLOT_NAMES if m.slot(n).stage in FOSSIL_STAGES)

    @invariant()
    def reports_and_masks_agree(self):
        m = self.model
        masks = m.masks()
        audit = compute_masks(m.audit_spec, m.reports())
        offers = lambda ms, op, i: bool(op in ms_ops(ms) and ms.op[op] and ms.slot[op, i])
        ms_ops = lambda ms: tuple(Op)[:ms.op.shape[0]]
        for i, r in enumerate(m.reports()):
            assert r.name == SLOT_NAMES[i] and r.stage is m.slot(r.name).stage
            withered = r.stage is Stage.WITHERING and r.alpha == 0.0
            if r.gate_open:
                assert r.stage in ADVANCE_TARGET or withered
            assert offers(masks, Op.ADVANCE, i) == (r.stage in ADVANCE_TARGET and r.gate_open)
            tamiyo_audits = m.action_spec.audit
            assert offers(masks, Op.CULL, i) == (r.stage in LIVE_STAGES or (tamiyo_audits and withered))
            assert offers(audit, Op.CULL, i) == (r.stage in LIVE_STAGES or withered)
            assert offers(audit, Op.WITHER, i) == (r.stage is Stage.FOSSILIZED)
            assert offers(audit, Op.REVIVE, i) == (r.stage is Stage.WITHERING)
            assert offers(masks, Op.WITHER, i) == (tamiyo_audits and r.stage is Stage.FOSSILIZED)


def _all_actions(model: MorphogeneticModel, spec=None):
    n_op, n_slot, n_bp, n_blend = (spec or model.action_spec).nvec
    return [FactoredAction(Op(o), s, b, bl) for o, s, b, bl in itertools.product(range(n_op), range(n_slot), range(n_bp), range(n_blend))]


LifecycleMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestLifecycle = LifecycleMachine.TestCase


# ------------------------------------------------------------------------------------------ masks ⇔ apply


@settings(max_examples=12, deadline=None)
@given(profile=st.sampled_from(sorted(CONFIGS)), picks=st.lists(st.integers(0, 10_000), min_size=5, max_size=25))
def test_apply_accepts_exactly_what_the_masks_allow(profile, picks):
    """In every state reached, every masked-out action raises (changing nothing), and the allowed action we
    pick runs without raising."""
    model = tiny_model(CONFIGS[profile])
    actions = _all_actions(model)
    for k, pick in enumerate(picks):
        masks = model.masks()
        allowed = [a for a in actions if masks.allows(a)]
        before = model.manifest(), model.param_counts()
        for a in actions:
            if not masks.allows(a):
                with pytest.raises(IllegalCommandError):
                    model.apply(a)
        assert (model.manifest(), model.param_counts()) == before
        model.apply(allowed[pick % len(allowed)])
        if k % 2:
            for n in SLOT_NAMES:  # feed the strict gates the evidence they want, now and then
                model.slot(n).record(grad_norm=1.0, contribution=0.01)
            model.step_epoch()


def test_out_of_range_actions_are_refused():
    """Indices outside a head's range are not actions: apply must refuse them (and change nothing),
    including negative indices, which numpy would otherwise read from the end of a mask."""
    model = tiny_model()
    n_op, n_slot, n_bp, n_blend = model.action_spec.nvec
    bad = [
        FactoredAction(Op.GERMINATE, n_slot, 0, 0),
        FactoredAction(Op.GERMINATE, 0, n_bp, 0),
        FactoredAction(Op.GERMINATE, 0, 0, n_blend),
        FactoredAction(Op.GERMINATE, -1, 0, 0),
        FactoredAction(Op.GERMINATE, 0, -1, 0),
        FactoredAction(Op.WAIT, -n_slot, 0, 0),
    ]
    for action in bad:
        before = model.manifest()
        with pytest.raises((IllegalCommandError, IndexError, ValueError)):
            model.apply(action)
        assert model.manifest() == before, action
