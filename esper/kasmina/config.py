"""Pydantic configs of the Kasmina plane: gate profiles, blend choices, the plane's settings (host configs live with their hosts)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from esper.leyline.base import EsperModel
from esper.leyline.blending import BlendCurve



class GateConfig(EsperModel):
    """Quality-gate thresholds G0–G6 (G6, a withered fossil's cull, has none: α must be 0) (see docs/architecture.md for what each gate protects)."""

    max_seed_param_ratio: float = Field(0.5, gt=0)
    """G0 (germinate): a blueprint is only offered in a slot if its parameters ≤ this × host parameters."""
    require_sanity_probe: bool = True
    """G1 (GERMINATED→TRAINING): the seed's probe forward must have produced a finite, shape-preserving output."""
    min_training_epochs: int = Field(1, ge=0)
    """G2 (TRAINING→BLENDING): epochs the seed must have trained in isolation."""
    min_seed_grad_norm: float = Field(0.0, ge=0)
    """G2: the seed's last recorded gradient norm must exceed this (0 = any finite value, incl. unrecorded)."""
    min_holding_epochs: int = Field(1, ge=0)
    """G4 (HOLDING→FOSSILIZED): epochs of probation at α = 1."""
    require_contribution: bool = False
    """G4: fossilizing requires a measured counterfactual contribution (else unmeasured passes)."""
    min_contribution: float = -1.0
    """G4: the counterfactual contribution (the task's validation metric with the seed − without) must be ≥ this."""
    embargo_epochs: int = Field(2, ge=0)
    """G5 (EMBARGOED→RESETTING→DORMANT): cool-down epochs after a cull before the slot can be reused."""


GATE_PROFILES: dict[str, GateConfig] = {
    # Lets every well-formed seed through as soon as the lifecycle allows; for smoke worlds and tests.
    "permissive": GateConfig(
        max_seed_param_ratio=2.0, min_training_epochs=0, min_holding_epochs=0, embargo_epochs=1
    ),
    # Demands evidence: isolation training, probation and a positive measured contribution.
    "strict": GateConfig(
        max_seed_param_ratio=0.25,
        min_training_epochs=3,
        min_seed_grad_norm=1e-8,
        min_holding_epochs=2,
        require_contribution=True,
        min_contribution=0.0,
        embargo_epochs=3,
    ),
}


class BlendChoices(EsperModel):
    """The α schedules a controller may pick from (the `blend` head is tempo × curve)."""

    tempos: tuple[int, ...] = (3, 5, 8)
    """Blend durations in epochs."""
    curves: tuple[BlendCurve, ...] = (BlendCurve.LINEAR, BlendCurve.COSINE, BlendCurve.SIGMOID)
    """α ramp shapes."""

    @model_validator(mode="after")
    def _non_empty(self) -> "BlendChoices":
        if not self.tempos or not self.curves:
            raise ValueError("blend.tempos and blend.curves must each list at least one choice")
        if min(self.tempos) < 1:
            raise ValueError("blend.tempos must all be ≥ 1 epoch")
        return self


class KasminaConfig(EsperModel):
    """Settings of the morphogenetic plane."""

    gate_profile: Literal["permissive", "strict", "custom"] = "permissive"
    """Named gate profile; 'custom' uses `gates` as given."""
    gates: GateConfig | None = None
    """Explicit gate thresholds (only with gate_profile='custom')."""
    blueprints: tuple[str, ...] | None = None
    """Blueprints a controller may germinate, in action-head order; None = every registered blueprint that fits
    at least one of the host's injection points (for the CNN host: every conv2d blueprint)."""
    blend: BlendChoices = BlendChoices()
    """α schedules offered to the controller."""
    auto_advance: bool = False
    """Kasmina moves every seed whose next gate is open one stage on after each decision (GERMINATED→TRAINING→
    BLENDING→HOLDING→FOSSILIZED, each gate checked as for ADVANCE): controllers then decide what, where, how and
    when to germinate and when to cull, and the lifecycle runs itself. Off = every step is an explicit ADVANCE."""
    lifecycle: Literal["isolated", "graft"] = "isolated"
    """isolated: a seed trains on a detached input (TRAINING), blends in over its tempo and is held before it
    fossilizes, each step when its gate opens. graft: a germinated seed goes through every stage in the same
    decision and is FOSSILIZED at once — its zero-initialised branch joins the graph function-preserving and trains
    with the host from the next batch (Net2Net / MSG-style growth: no isolation, no blend, no cull; the gates must
    then let a new seed through without epochs or evidence). The blend head's choice is unused."""
    wither_tempo: int = Field(4, ge=1)
    """Epochs over which a WITHERING fossil's α falls linearly from 1 to 0 while the host trains on (Emrakul's
    audit); at 0 the model is the model with that slot dormant, bit for bit, and the seed may be culled."""
    audit_actions: bool = False
    """Tamiyo's op head also offers WITHER and REVIVE, and CULL of a withered fossil (the action layout grows by
    two ops: agents trained without them cannot play it). Emrakul (the world's `emrakul:` section) audits
    whether or not Tamiyo may."""
    isolation_step: float = Field(1.0, gt=0)
    """Functional step size of isolated training: a TRAINING seed converges to f = −isolation_step·∂ℓ/∂h
    (a gradient-boosting step on the host's features); smaller = more conservative seeds at blend time."""

    @model_validator(mode="after")
    def _gates_match_profile(self) -> "KasminaConfig":
        if self.gate_profile == "custom" and self.gates is None:
            raise ValueError("kasmina.gates is required when kasmina.gate_profile is 'custom'")
        if self.gate_profile != "custom" and self.gates is not None:
            raise ValueError("kasmina.gates is only allowed with kasmina.gate_profile='custom'")
        if self.blueprints is not None and not self.blueprints:
            raise ValueError("kasmina.blueprints must list at least one blueprint (or be null: all that fit)")
        g = self.gate_config()
        if self.lifecycle == "graft" and (g.min_training_epochs or g.min_holding_epochs or g.require_contribution
                                          or g.min_seed_grad_norm):
            raise ValueError("kasmina.lifecycle='graft' fossilizes a seed in the decision that germinates it: the gates "
                             "need min_training_epochs=0, min_holding_epochs=0, min_seed_grad_norm=0 and "
                             f"require_contribution=false (gate_profile {self.gate_profile!r} has {g})")
        return self

    def gate_config(self) -> GateConfig:
        """The effective gate thresholds."""
        return self.gates if self.gates is not None else GATE_PROFILES[self.gate_profile]
