"""Heuristic Tamiyo: a readable rule-based controller emitting the same factored actions as the RL policy.

Rules, first match wins each epoch:
1. CULL a live seed whose measured contribution is below `cull_below` after `judge_after_epochs` in BLENDING/
   HOLDING, or that has sat in TRAINING/GERMINATED longer than `max_stage_epochs` (stalled).
2. ADVANCE a seed whose next gate is open; from HOLDING only if its contribution ≥ `fossilize_above`.
3. GERMINATE on a plateau: after `warmup_epochs`, with fewer than `max_live_seeds` live seeds, ≥
   `min_epochs_left` epochs to go, and a validation metric that rose less than `plateau_delta` over the last
   `plateau_window` epochs — or, with `germinate_by_deadline`, when no seed has been tried yet and exactly
   `min_epochs_left` epochs remain (the last chance for a seed to finish its lifecycle in short runs). Slot: the allowed dormant slot with the most channels (deep slots add capacity
   where features are richest; ties → the earliest). Blueprint: the first allowed one in `blueprint_preference`.
   Blend: `tempo` epochs with the `curve` ramp. With `germinate_at_budget`, the trigger is compute instead: one
   seed once that share of the run's compute budget is spent.
4. Otherwise WAIT.
"""

from __future__ import annotations

from pydantic import Field

from esper.leyline import LIVE_STAGES, FactoredAction, Op, Stage
from esper.leyline.base import EsperModel
from esper.leyline.control import Decision, Observation
from esper.tamiyo.registry import ControllerRequest, register_controller


class HeuristicConfig(EsperModel):
    """Thresholds of the heuristic controller."""

    warmup_epochs: int = Field(2, ge=0)
    """No germination before this epoch."""
    plateau_window: int = Field(2, ge=1)
    """Epochs over which the metric's gain is measured."""
    plateau_delta: float = Field(0.01, ge=0)
    """A gain of the validation metric below this over the window counts as a plateau."""
    max_live_seeds: int = Field(1, ge=1)
    """Seeds allowed on probation at once."""
    min_epochs_left: int = Field(7, ge=0)
    """Do not start a seed that cannot finish its lifecycle (germinate → train 1 → blend `tempo` → hold → fossilize)."""
    cull_below: float = Field(-0.005, le=0)
    """Cull when the measured contribution (in units of the task's metric) is below this."""
    fossilize_above: float = Field(0.0)
    """Fossilize only with contribution ≥ this."""
    judge_after_epochs: int = Field(1, ge=0)
    """Epochs in BLENDING/HOLDING before a contribution is trusted for culling."""
    max_stage_epochs: int = Field(6, ge=1)
    """A seed stuck longer than this in GERMINATED/TRAINING is culled as stalled."""
    germinate_by_deadline: bool = True
    """Germinate at the last epoch that leaves `min_epochs_left`, if no plateau came and no seed was tried."""
    germinate_at_budget: float | None = Field(None, ge=0, le=1)
    """Compute-timed growth: germinate one seed once this share of the run's compute budget is spent
    (`TrainingSignals.budget_spent`), instead of on a plateau or the deadline; None = plateau rules. Meant for
    equal-compute runs with `kasmina.lifecycle: graft`, where growing a third of the way in beat the big control
    (docs/results.md §10)."""
    blueprint_preference: tuple[str, ...] = ("conv_light", "bottleneck", "depthwise", "attention", "norm", "conv_heavy",
                                             "mlp", "block", "attention_head", "token_mlp", "lora", "token_norm",
                                             "block_copy")
    """Blueprints in order of preference (the first the plane offers is used: conv ones on a CNN, token ones on
    a transformer — a whole block first, depth growth being what pays on text)."""
    tempo: int = Field(3, ge=1)
    """Blend tempo (must be one of the plane's tempos, else the nearest is used)."""
    curve: str = "linear"
    """Blend curve."""


class HeuristicTamiyo:
    name = "heuristic"

    def __init__(self, cfg: HeuristicConfig | None = None) -> None:
        self.cfg = cfg or HeuristicConfig()
        self.germinations = 0  # seeds this controller started in the current run (the deadline rule's memory)

    def reset(self) -> None:
        """Forget the current run (call between runs/episodes)."""
        self.germinations = 0

    def decide(self, obs: Observation) -> Decision:
        for rule in (self._cull, self._advance, self._germinate):
            decision = rule(obs)
            if decision is not None and obs.masks.allows(decision.action):
                self.germinations += decision.action.op is Op.GERMINATE
                return decision
        return Decision(FactoredAction(Op.WAIT), "nothing to do")

    def _cull(self, obs: Observation) -> Decision | None:
        c = self.cfg
        for i, r in enumerate(obs.reports):
            judged = r.stage in (Stage.BLENDING, Stage.HOLDING) and r.epochs_in_stage >= c.judge_after_epochs
            if judged and r.contribution is not None and r.contribution < c.cull_below:
                return Decision(FactoredAction(Op.CULL, i), f"{r.name}: contribution {r.contribution:+.4f} < {c.cull_below}")
            if r.stage in (Stage.GERMINATED, Stage.TRAINING) and r.epochs_in_stage > c.max_stage_epochs:
                return Decision(FactoredAction(Op.CULL, i), f"{r.name}: stalled {r.epochs_in_stage} epochs in {r.stage.name}")
        return None

    def _advance(self, obs: Observation) -> Decision | None:
        for i, r in enumerate(obs.reports):
            if not obs.masks.slot[Op.ADVANCE, i] or not r.gate_open:
                continue
            if r.stage is Stage.HOLDING and (r.contribution is None or r.contribution < self.cfg.fossilize_above):
                continue
            return Decision(FactoredAction(Op.ADVANCE, i), f"{r.name}: gate open in {r.stage.name}")
        return None

    def _germinate(self, obs: Observation) -> Decision | None:
        why = self._germination_trigger(obs)
        if why is None:
            return None
        c = self.cfg
        slots = [i for i in range(len(obs.reports)) if obs.masks.slot[Op.GERMINATE, i]]
        if not slots:
            return None
        widths = obs.spec.slot_widths or (0,) * len(obs.reports)
        slot = max(slots, key=lambda i: (widths[i], -i))
        allowed = [b for b in c.blueprint_preference if b in obs.spec.blueprints and obs.masks.blueprint[slot, obs.spec.blueprints.index(b)]]
        if not allowed:
            return None
        tempo = min(obs.spec.tempos, key=lambda t: abs(t - c.tempo))
        curves = [cv.value for cv in obs.spec.curves]
        curve = obs.spec.curves[curves.index(c.curve)] if c.curve in curves else obs.spec.curves[0]
        action = FactoredAction(Op.GERMINATE, slot, obs.spec.blueprints.index(allowed[0]), obs.spec.blend_index(tempo, curve))
        return Decision(action, f"{why}: {allowed[0]} in {obs.reports[slot].name}")

    def _germination_trigger(self, obs: Observation) -> str | None:
        """Why to germinate now (None: not now) — the compute share, or a plateau / the deadline."""
        c, s = self.cfg, obs.signals
        untried = self.germinations == 0 and all(r.stage is Stage.DORMANT for r in obs.reports)
        if c.germinate_at_budget is not None:
            spent = untried and s.budget_spent >= c.germinate_at_budget
            return f"{s.budget_spent:.0%} of the compute budget spent" if spent else None
        live = sum(r.stage in LIVE_STAGES for r in obs.reports)
        hist = s.metric_history
        if s.epoch < c.warmup_epochs or live >= c.max_live_seeds or s.max_epochs - s.epoch < c.min_epochs_left:
            return None
        plateau = len(hist) > c.plateau_window and hist[-1] - hist[-1 - c.plateau_window] < c.plateau_delta
        if plateau:
            return f"plateau (+{hist[-1] - hist[-1 - c.plateau_window]:.4f} over {c.plateau_window} epochs)"
        return "deadline" if c.germinate_by_deadline and untried and s.max_epochs - s.epoch == c.min_epochs_left else None


@register_controller("heuristic", help="grow the preferred blueprint at plateaus (esper/tamiyo/heuristic.py)")
def _heuristic(request: ControllerRequest):
    return HeuristicTamiyo
