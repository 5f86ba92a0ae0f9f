"""SeedSlot: one injection point's seed and its lifecycle (isolation, blending, gates, embargo)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable

import torch
from torch import Tensor, nn

from esper.kasmina.blueprints import Blueprint, get_blueprint
from esper.kasmina.gates import GateResult, check_gate
from esper.kasmina.protocol import InjectionPoint
from esper.kasmina.config import GateConfig
from esper.leyline import ADVANCE_TARGET, CULLABLE_STAGES, FOSSIL_STAGES, LIVE_STAGES, BlendCurve, SlotManifest, TRANSITIONS, SlotReport, SlotState, Stage, alpha_at, is_legal
from esper.leyline.telemetry import (
    CullEvent,
    FossilizeEvent,
    GateEvent,
    GerminateEvent,
    StageChangeEvent,
    TelemetryEvent,
)

SEED_STAGES = LIVE_STAGES | FOSSIL_STAGES  # stages in which the slot holds a seed module


class IllegalCommandError(RuntimeError):
    """A lifecycle command that the transition table or a gate forbids. State is left unchanged."""


class GateClosedError(IllegalCommandError):
    """The transition is legal but its quality gate did not pass."""


class SeedSlot(nn.Module):
    """A seed slot. Output by stage (h = host features at the point, f = the seed's residual branch):

    DORMANT, GERMINATED, CULLED, EMBARGOED, RESETTING: h (the seed, if any, does not run)
    TRAINING:   h + (f − stopgrad(f)), f = f(stopgrad(h)) — value is exactly h, the seed gets ∂L/∂h
                (plus `isolation_penalty`, which bounds f; see forward); in eval mode or without gradients
                h alone (the seed does not run)
    BLENDING:   h + α·f(stopgrad(h))   == lerp(h, h + f, α)
    HOLDING:    h + f(stopgrad(h))     (α = 1, host still shielded from the seed's gradient)
    FOSSILIZED: h + f(h)               (part of the host; trained jointly with it)
    WITHERING:  h + α·f(h)             (Emrakul's audit: α falls 1 → 0 over `wither_tempo` epochs; at α = 0
                                        exactly h, as if the slot were dormant). Training with 0 < α < 1:
                h + m·f(h), m ~ Bernoulli(α) per sample — the host learns to work both with and without the
                seed, so the audit can compare the two on the same examples (α·f(h) is m's expectation)
    """

    def __init__(self, point: InjectionPoint, gates: GateConfig, host_params: int, isolation_step: float = 1.0,
                 wither_tempo: int = 4) -> None:
        super().__init__()
        if "." in point.name or not point.name:
            raise ValueError(f"injection point names must be non-empty and dot-free, got {point.name!r}")
        self.point = point
        self.gates = gates
        self.host_params = host_params
        self.listener: Callable[[TelemetryEvent], None] | None = None
        self.seed: nn.Module | None = None
        self.alpha_override: float | None = None  # counterfactual evaluation forces α (e.g. 0)
        self.isolation_step = isolation_step
        self.wither_tempo = wither_tempo
        self.isolation_penalty: Tensor | None = None  # set by a TRAINING forward; the trainer adds it to the loss
        self.state = SlotState(point.name)
        """Everything the slot knows besides its module; replaced, never mutated (reports may share it)."""

    def _set(self, **changes) -> None:
        self.state = replace(self.state, **changes)

    def _clear_seed_state(self) -> None:
        """Drop the seed and every fact about it; the stage and the slot's clock stay."""
        self.seed = None
        self.state = SlotState(self.state.name, stage=self.state.stage, epoch=self.state.epoch)

    # ------------------------------------------------------------------ forward
    def forward(self, h: Tensor) -> Tensor:
        seed, stage = self.seed, self.state.stage
        if seed is None or stage not in (Stage.TRAINING, Stage.BLENDING, Stage.HOLDING, *FOSSIL_STAGES):
            return h
        if stage is Stage.FOSSILIZED and self.alpha_override is None:
            return h + seed(h)
        if stage is Stage.TRAINING and self.alpha_override is None:
            if not (self.training and torch.is_grad_enabled()):
                return h  # the output is exactly h: without a backward pass the seed has nothing to learn
            f = seed(h.detach())
            # Restoring force: with only the straight-through gradient, f would drift along −∂L/∂h without
            # bound (its effect is never seen). With this penalty the seed's optimum is
            # f_i = −isolation_step · ∂ℓ_i/∂h_i: a gradient-boosting step fitted to the host's error.
            per_sample = f.pow(2).flatten(1).sum(1)  # (B, ...) → (B,)
            self.isolation_penalty = 0.5 / self.isolation_step * per_sample.mean()
            return h + (f - f.detach())  # straight-through: value h, gradient ∂L/∂h reaches the seed
        alpha = self.state.alpha if self.alpha_override is None else self.alpha_override
        if alpha == 0.0:
            return h  # bit for bit the dormant slot's output (and the seed gets no gradient)
        if stage is Stage.WITHERING and alpha < 1.0 and self.training and torch.is_grad_enabled():
            # Drop the seed per sample with probability 1 − α (stochastic depth): a host trained on a mixture of
            # with and without can be judged fairly both ways (a host trained at a fixed fraction α of the seed
            # is adapted to neither). (B, ...) mask broadcast over the sample's features.
            keep = torch.rand((h.shape[0],) + (1,) * (h.dim() - 1), device=h.device) < alpha
            return h + keep.to(h.dtype) * seed(h)
        return h + alpha * seed(h if stage in FOSSIL_STAGES else h.detach())

    # ------------------------------------------------------------------ commands
    def germinate(self, blueprint: Blueprint | str, tempo: int, curve: BlendCurve, device=None, dtype=None,
                  template: nn.Module | None = None) -> None:
        """Graft a seed built from `blueprint` into this DORMANT slot (gate G0). `template`: the host module
        feeding this point, for a blueprint initialised from the host (`block_copy`)."""
        bp = get_blueprint(blueprint) if isinstance(blueprint, str) else blueprint
        self._require_legal("germinate", Stage.GERMINATED)
        if bp.kind != self.point.kind:
            raise IllegalCommandError(
                f"slot {self.point.name!r}: blueprint {bp.name!r} fits {bp.kind} points, this point is {self.point.kind}"
            )
        if tempo < 1:
            raise IllegalCommandError(f"slot {self.point.name!r}: blend tempo must be ≥ 1, got {tempo}")
        if bp.init_from_host is not None and template is None:
            raise IllegalCommandError(f"slot {self.point.name!r}: blueprint {bp.name!r} copies the host module before "
                                      "this point, and the host offers none (HostProtocol's optional template_at)")
        try:
            blend_curve = BlendCurve(curve)
        except ValueError:
            raise IllegalCommandError(
                f"slot {self.point.name!r}: unknown blend curve {curve!r}; known: {[c.value for c in BlendCurve]}"
            ) from None
        params = bp.param_count(self.point.channels)
        self._gate_or_raise(Stage.DORMANT, Stage.GERMINATED, replace(self.state, seed_params=params))
        # Build and probe first; the slot's state only changes once nothing can fail any more.
        try:
            module = bp.build(self.point.channels, template).to(device=device, dtype=dtype)
        except TypeError as exc:  # a template the blueprint cannot copy
            raise IllegalCommandError(f"slot {self.point.name!r}: {exc}") from None
        sanity_ok = self._probe(module, device, dtype)
        self.seed = module
        self._set(blueprint=bp.name, tempo=tempo, curve=blend_curve, sanity_ok=sanity_ok, seed_params=params)
        self._move(Stage.GERMINATED, "germinate")
        self._emit(GerminateEvent, blueprint=bp.name, seed_params=self.seed_params, tempo=tempo, curve=self.curve.value)

    def advance(self) -> Stage:
        """Take the next happy-path step (GERMINATED→TRAINING→BLENDING→HOLDING→FOSSILIZED) if its gate passes."""
        target = ADVANCE_TARGET.get(self.stage)
        if target is None:
            raise IllegalCommandError(
                f"slot {self.point.name!r}: cannot advance from {self.stage.name}; "
                f"advance is legal from {[s.name for s in ADVANCE_TARGET]}"
            )
        self._gate_or_raise(self.stage, target, self.state)
        self._move(target, "advance")
        if target is Stage.BLENDING:
            self._set(alpha=0.0)
        elif target in (Stage.HOLDING, Stage.FOSSILIZED):
            self._set(alpha=1.0)
        if target is Stage.FOSSILIZED:
            self._emit(FossilizeEvent, blueprint=self.blueprint, seed_params=self.seed_params)
        return target

    def graft(self) -> None:
        """GERMINATED → FOSSILIZED in one step (`kasmina.lifecycle='graft'`), each stage entered through its gate.
        The seed's branch is zero at germination, so setting α = 1 at once leaves the output unchanged. A closed
        gate stops the graft where it is (a seed whose probe failed stays GERMINATED; its GateEvent says why)."""
        for target in (Stage.TRAINING, Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED):
            if target is Stage.HOLDING:
                self._set(alpha=1.0)  # the blend is skipped (G3 asks for α = 1)
            try:
                self._gate_or_raise(self.stage, target, self.state)
            except GateClosedError:
                return
            self._move(target, "graft")
        self._emit(FossilizeEvent, blueprint=self.blueprint, seed_params=self.seed_params)

    def cull(self, reason: str = "commanded") -> None:
        """Remove a live seed, or a withered fossil once its α is 0 (gate G6); the slot then serves an embargo
        before it can be reused."""
        if self.stage not in CULLABLE_STAGES:
            raise IllegalCommandError(
                f"slot {self.point.name!r}: cannot cull from {self.stage.name}; "
                f"cull is legal from {sorted(s.name for s in CULLABLE_STAGES)}"
            )
        if self.stage is Stage.WITHERING:
            self._gate_or_raise(Stage.WITHERING, Stage.CULLED, self.state)
        self._emit(CullEvent, blueprint=self.blueprint, from_stage=self.stage.name, reason=reason)
        self._clear_seed_state()  # free the parameters now; the slot must not cost anything while embargoed
        self._move(Stage.CULLED, reason)

    def wither(self, reason: str = "commanded") -> None:
        """Start an audit of a fossil: from the next epoch tick its α falls linearly to 0 over `wither_tempo`
        epochs while the host trains on (FOSSILIZED → WITHERING; the measured churn starts afresh)."""
        self._require_legal("wither", Stage.WITHERING)
        self._set(churn=None, churn_loss=None)
        self._move(Stage.WITHERING, reason)

    def revive(self, reason: str = "commanded") -> None:
        """End an audit by keeping the seed: α = 1 again, FOSSILIZED (WITHERING → FOSSILIZED)."""
        if self.stage is not Stage.WITHERING:
            raise IllegalCommandError(f"slot {self.point.name!r}: cannot revive from {self.stage.name}; "
                                      "revive is legal from WITHERING")
        self._set(alpha=1.0)
        self._move(Stage.FOSSILIZED, reason)

    def step_epoch(self) -> None:
        """Advance the slot's clock: α ramps in BLENDING; CULLED→EMBARGOED→RESETTING→DORMANT run by themselves."""
        s = self.state
        self._set(epoch=s.epoch + 1, epochs_in_stage=s.epochs_in_stage + 1)
        stage = s.stage
        if stage is Stage.BLENDING:
            assert s.tempo is not None and s.curve is not None
            self._set(alpha=alpha_at(self.state.epochs_in_stage, s.tempo, s.curve))
        elif stage is Stage.WITHERING:  # exactly 0 after wither_tempo ticks (alpha_at's ends are exact)
            self._set(alpha=1.0 - alpha_at(self.state.epochs_in_stage, self.wither_tempo, BlendCurve.LINEAR))
        elif stage is Stage.CULLED:
            self._move(Stage.EMBARGOED, "embargo")
            self._set(embargo_remaining=self.gates.embargo_epochs)
            if self.gates.embargo_epochs == 0:  # no embargo: pass straight through (else 0 would act like 1)
                self._move(Stage.RESETTING, "no embargo")
        elif stage is Stage.EMBARGOED:
            self._set(embargo_remaining=max(s.embargo_remaining - 1, 0))
            if self.state.embargo_remaining == 0:
                self._move(Stage.RESETTING, "embargo served")
        elif stage is Stage.RESETTING:
            self._gate_or_raise(Stage.RESETTING, Stage.DORMANT, self.state)
            self._clear_seed_state()
            self._move(Stage.DORMANT, "reset")

    def record(self, *, contribution: float | None = None, grad_norm: float | None = None,
               churn: float | None = None, churn_loss: float | None = None) -> None:
        """Store measurements the trainer made (counterfactual contribution, gradient norm, an audit's churn)."""
        for name, value in (("contribution", contribution), ("grad_norm", grad_norm), ("churn", churn),
                            ("churn_loss", churn_loss)):
            if value is not None:
                self._set(**{name: float(value)})

    # ------------------------------------------------------------------ queries
    def seed_grad_norm(self) -> float | None:
        """L2 norm of the seed's current gradients (None if it has none)."""
        if self.seed is None:
            return None
        grads = [p.grad.detach().flatten() for p in self.seed.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.cat(grads))) if grads else None

    def next_gate(self) -> GateResult | None:
        """The gate guarding this slot's next step, evaluated now: its ADVANCE, or a withering seed's cull (G6);
        None if neither is legal."""
        target = Stage.CULLED if self.stage is Stage.WITHERING else ADVANCE_TARGET.get(self.stage)
        return None if target is None else check_gate(self.stage, target, self.state, self.gates, self.host_params)

    def report(self) -> SlotReport:
        gate = self.next_gate()
        return SlotReport(**vars(self.state), gate_open=bool(gate and gate.passed))

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> SlotManifest:
        return SlotManifest.from_state(self.state)

    def load_manifest(self, m: SlotManifest, device=None, dtype=None, template: nn.Module | None = None) -> None:
        """Rebuild this slot's structure from a manifest (weights are loaded afterwards by the model; `template` as
        for germinate, so a copied block keeps the host block's structure)."""
        if m.name != self.point.name:
            raise ValueError(f"manifest slot {m.name!r} does not match slot {self.point.name!r}")
        stage = Stage[m.stage]
        if (stage in SEED_STAGES) != (m.blueprint is not None):
            raise ValueError(f"slot {m.name!r}: stage {stage.name} and blueprint {m.blueprint!r} disagree")
        self.seed = None
        if m.blueprint is not None:
            self.seed = get_blueprint(m.blueprint).build(self.point.channels, template).to(device=device, dtype=dtype)
        params = 0 if self.seed is None else sum(p.numel() for p in self.seed.parameters())
        self.state = m.to_state(seed_params=params, sanity_ok=self.seed is not None)

    def announce_restore(self, previous: Stage) -> None:
        """Emit the stage change a snapshot restore made (it bypasses the table: time was rewound)."""
        self._emit(StageChangeEvent, from_stage=previous.name, to_stage=self.stage.name, blueprint=self.blueprint,
                   reason="restored from snapshot")

    # ------------------------------------------------------------------ internals
    def _require_legal(self, command: str, target: Stage) -> None:
        if not is_legal(self.stage, target):
            raise IllegalCommandError(
                f"slot {self.point.name!r}: cannot {command} from {self.stage.name} "
                f"(legal next stages: {sorted(s.name for s in TRANSITIONS[self.stage])})"
            )

    def _gate_or_raise(self, src: Stage, dst: Stage, ev: SlotState) -> None:
        result = check_gate(src, dst, ev, self.gates, self.host_params)
        if result.gate != "-":
            self._emit(GateEvent, gate=result.gate, passed=result.passed, reason=result.reason)
        if not result.passed:
            raise GateClosedError(f"slot {self.point.name!r}: gate {result.gate} refused {src.name}→{dst.name}: {result.reason}")

    def _probe(self, module: nn.Module, device, dtype) -> bool:
        """Germination probe: a random input must give a finite output of the same shape."""
        shape = self.point.feature_shape(2)
        # A private generator so probing never shifts the global RNG stream (runs stay reproducible).
        gen = torch.Generator(device=device or "cpu").manual_seed(0)
        with torch.no_grad():
            x = torch.randn(shape, device=device, dtype=dtype, generator=gen)
            y = module(x)
        return y.shape == x.shape and bool(torch.isfinite(y).all())

    def _move(self, target: Stage, reason: str) -> None:
        src = self.stage
        if not is_legal(src, target):  # the one place a stage changes; the table is the law
            raise IllegalCommandError(f"slot {self.point.name!r}: illegal transition {src.name}→{target.name}")
        self._set(stage=target, epochs_in_stage=0)
        self._emit(StageChangeEvent, from_stage=src.name, to_stage=target.name, blueprint=self.blueprint, reason=reason)

    def _emit(self, event_cls: type, **fields) -> None:
        if self.listener is not None:
            self.listener(event_cls(epoch=self.epoch, slot=self.point.name, **fields))


# Every state field is also a read-only attribute of the slot (slot.stage is slot.state.stage): a slot changes only
# through its commands, and a new SlotState field is readable here without an edit.
for _field in (f.name for f in fields(SlotState) if f.name != "name"):
    setattr(SeedSlot, _field, property(lambda self, name=_field: getattr(self.state, name), doc=f"state.{_field} (read-only)"))
del _field
