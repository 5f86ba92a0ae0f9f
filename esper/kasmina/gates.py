"""Quality gates G0–G6: the evidence a seed must show before each lifecycle step."""

from __future__ import annotations

import math
from dataclasses import dataclass

from esper.kasmina.config import GateConfig
from esper.leyline import SlotState, Stage

# Which gate guards which transition (documented in docs/architecture.md).
GATE_FOR: dict[tuple[Stage, Stage], str] = {
    (Stage.DORMANT, Stage.GERMINATED): "G0",
    (Stage.GERMINATED, Stage.TRAINING): "G1",
    (Stage.TRAINING, Stage.BLENDING): "G2",
    (Stage.BLENDING, Stage.HOLDING): "G3",
    (Stage.HOLDING, Stage.FOSSILIZED): "G4",
    (Stage.RESETTING, Stage.DORMANT): "G5",
    (Stage.WITHERING, Stage.CULLED): "G6",
}


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    reason: str


def _result(gate: str, failures: list[str]) -> GateResult:
    return GateResult(gate, not failures, "; ".join(failures) if failures else "ok")


def check_gate(src: Stage, dst: Stage, ev: SlotState, cfg: GateConfig, host_params: int) -> GateResult:
    """Evaluate the gate guarding src → dst on a slot's state (for G0: the state it would have with the candidate
    seed). Transitions without a gate always pass."""
    gate = GATE_FOR.get((src, dst))
    fail: list[str] = []
    if gate == "G0":
        ratio = ev.seed_params / max(host_params, 1)
        if ratio > cfg.max_seed_param_ratio:
            fail.append(f"seed/host params {ratio:.3f} > max_seed_param_ratio {cfg.max_seed_param_ratio}")
    elif gate == "G1":
        if cfg.require_sanity_probe and not ev.sanity_ok:
            fail.append("seed failed its germination probe (non-finite or shape-changing output)")
    elif gate == "G2":
        if ev.epochs_in_stage < cfg.min_training_epochs:
            fail.append(f"trained {ev.epochs_in_stage} < min_training_epochs {cfg.min_training_epochs}")
        if ev.grad_norm is not None and not math.isfinite(ev.grad_norm):
            fail.append("seed gradient norm is not finite")
        elif cfg.min_seed_grad_norm > 0 and (ev.grad_norm or 0.0) <= cfg.min_seed_grad_norm:
            fail.append(f"seed grad norm {ev.grad_norm} ≤ min_seed_grad_norm {cfg.min_seed_grad_norm}")
    elif gate == "G3":
        if ev.alpha < 1.0:
            fail.append(f"blend incomplete (α = {ev.alpha:.3f} < 1)")
    elif gate == "G4":
        if ev.epochs_in_stage < cfg.min_holding_epochs:
            fail.append(f"held {ev.epochs_in_stage} < min_holding_epochs {cfg.min_holding_epochs}")
        if ev.contribution is None:
            if cfg.require_contribution:
                fail.append("no counterfactual contribution measured yet")
        elif ev.contribution < cfg.min_contribution:
            fail.append(f"contribution {ev.contribution:.4f} < min_contribution {cfg.min_contribution}")
    elif gate == "G6":
        if ev.alpha > 0.0:  # culled at α = 0 the output does not change: the host already runs without it
            fail.append(f"withering incomplete (α = {ev.alpha:.3f} > 0)")
    elif gate == "G5":
        if ev.blueprint is not None:  # a slot's seed module and its blueprint are dropped together
            fail.append("slot still holds a seed module")
    return _result(gate or "-", fail)
