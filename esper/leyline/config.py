"""Pydantic configs of the Kasmina plane: gate profiles, blend choices, slot and host settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from esper.leyline.base import EsperModel
from esper.leyline.blending import BlendCurve
from esper.leyline.registry import HOST_CONFIGS, HostConfig


class GateConfig(EsperModel):
    """Quality-gate thresholds G0–G5 (see docs/architecture.md for what each gate protects)."""

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


@HOST_CONFIGS.register
class CNNHostConfig(HostConfig):
    """The CNN host for images (esper.kasmina.hosts.cnn)."""

    name: Literal["cnn"] = "cnn"
    """Host family."""
    preset: Literal["tiny", "small", "paper", "custom"] = "small"
    """Width preset: tiny (8-16-32, cheap worlds), small (16-32-64), paper (32-64-128, the seed documents' host)."""
    widths: tuple[int, ...] | None = None
    """Channel width of each block; required when preset is custom, else taken from the preset."""
    convs_per_block: int = Field(1, ge=1, le=4)
    """3×3 conv layers per block (each block ends with an injection point)."""
    num_classes: int = Field(10, ge=2)
    """Output classes (must equal the task's output size)."""
    in_channels: int = Field(3, ge=1)
    """Input image channels."""

    @model_validator(mode="after")
    def _widths_for_custom(self) -> "CNNHostConfig":
        if self.preset == "custom" and not self.widths:
            raise ValueError("host.widths is required when host.preset is 'custom'")
        if self.widths is not None and any(w < 1 for w in self.widths):
            raise ValueError("host.widths must all be ≥ 1")
        return self


TRANSFORMER_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64},  # cheap worlds and tests
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128},  # nanoGPT's CPU configuration
}


@HOST_CONFIGS.register
class TransformerHostConfig(HostConfig):
    """A GPT-style character transformer host (esper.kasmina.hosts.transformer)."""

    name: Literal["transformer"] = "transformer"
    """Host family."""
    preset: Literal["tiny", "small", "custom"] = "tiny"
    """tiny (2 layers, 2 heads, 64 wide), small (4 layers, 4 heads, 128 wide: nanoGPT's CPU configuration), or
    custom (n_layer, n_head, n_embd as given)."""
    n_layer: int | None = Field(None, ge=1)
    """Transformer blocks (each ends with an injection point); from the preset unless custom."""
    n_head: int | None = Field(None, ge=1)
    """Attention heads per block."""
    n_embd: int | None = Field(None, ge=8)
    """Feature width D (a multiple of n_head)."""
    block_size: int = Field(64, ge=2)
    """Context length T (the text task's windows must not be longer)."""
    vocab_size: int = Field(65, ge=2)
    """Characters in the vocabulary (must equal the task's output size; tiny Shakespeare has 65)."""

    @model_validator(mode="after")
    def _shape(self) -> "TransformerHostConfig":
        given = {k: getattr(self, k) for k in ("n_layer", "n_head", "n_embd")}
        if self.preset == "custom" and None in given.values():
            raise ValueError("host.n_layer, host.n_head and host.n_embd are required when host.preset is 'custom'")
        if self.preset != "custom" and any(v is not None for v in given.values()):
            raise ValueError(f"host.n_layer/n_head/n_embd come from preset {self.preset!r}: set preset: custom to give them")
        self.dims()  # n_embd must split into the heads
        return self

    def dims(self) -> dict[str, int]:
        """n_layer, n_head, n_embd in effect."""
        d = TRANSFORMER_PRESETS[self.preset] if self.preset != "custom" else \
            {"n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd}
        if d["n_embd"] % d["n_head"]:
            raise ValueError(f"host.n_embd ({d['n_embd']}) must be a multiple of host.n_head ({d['n_head']})")
        return d


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
