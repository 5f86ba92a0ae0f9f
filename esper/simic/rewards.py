"""The reward: one signed term per effect, summed — Δmetric, stage shaping, parameter rent, compute rent, action
costs, pruning credit, terminal metric, death penalty, invalid-action penalty.

A term is a function (RewardConfig, RewardStep) → its signed contribution; `REWARD_TERMS` lists them in order.
Adding a term is one function here, one entry in the mapping (and its weight in RewardConfig) and its test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pydantic import Field, model_validator

from esper.leyline import Op, SlotReport
from esper.leyline.base import EsperModel


class RewardConfig(EsperModel):
    """Every reward weight (docs/simic.md, "Reward"); the Tune sweep's search space.

    r_t = acc_weight·Δmetric + pbrs_weight·(γ·Φ(s′) − Φ(s)) − rent_lambda·excess_params_ratio/T
          − compute_rent_lambda·FLOPs_t/B − cost[op] + prune_weight·(parameters a cull of a withered fossil freed)/P_host
          (+ terminal_weight·final metric at the last step; a Governor rollback ends the episode with −death_penalty)
    The metric is the task's (validation accuracy, a fraction, for image classification).
    """

    acc_weight: float = Field(1.0, ge=0)
    """Weight of the change in the task's validation metric since the last step (named after the first metric,
    accuracy)."""
    pbrs_weight: float = Field(0.1, ge=0)
    """Weight of the potential-based shaping term."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount used in the shaping term (match PPO's γ to keep optimal policies unchanged)."""
    stage_potentials: dict[str, float] = {
        "DORMANT": 0.0, "GERMINATED": 0.1, "TRAINING": 0.2, "BLENDING": 0.3, "HOLDING": 0.4,
        "FOSSILIZED": 0.5, "CULLED": 0.0, "EMBARGOED": 0.0, "RESETTING": 0.0, "WITHERING": 0.5,
    }
    """Φ contribution of a slot in each stage (Φ(s) = sum over slots). WITHERING may be left out (configs written
    before Emrakul): it then takes FOSSILIZED's value — a withering seed is still a fossil until it is culled."""
    rent_lambda: float = Field(0.05, ge=0)
    """Rent λ: per episode, λ·(mean excess_params_ratio) is paid (charged per step as λ·ratio/T)."""
    compute_rent_lambda: float = Field(0.0, ge=0)
    """Compute rent λ_c: each step pays λ_c × (training FLOPs its epoch spent) / B, B = the run's compute budget
    (trainer.budget_flops or budget_host_epochs; in an equal-epoch world what the bare host spends in all its
    epochs) — the bare host pays λ_c over a whole episode, a host with a seed as big as itself ≈ 2·λ_c."""
    germinate_cost: float = Field(0.002, ge=0)
    """Cost of a GERMINATE action."""
    advance_cost: float = Field(0.0, ge=0)
    """Cost of an ADVANCE action."""
    cull_cost: float = Field(0.002, ge=0)
    """Cost of a CULL action."""
    wither_cost: float = Field(0.0, ge=0)
    """Cost of a WITHER action (starting an audit; layouts with `kasmina.audit_actions`)."""
    revive_cost: float = Field(0.0, ge=0)
    """Cost of a REVIVE action."""
    prune_weight: float = Field(0.0, ge=0)
    """Pruning credit: a cull of a withered fossil pays prune_weight × (its parameters / P_host) at once — the
    rent it will not pay any more, credited when the decision is made (0 = only the rent saved step by step)."""
    terminal_weight: float = Field(1.0, ge=0)
    """Weight of the final validation metric, paid at the last step."""
    death_penalty: float = Field(1.0, ge=0)
    """Penalty when the Governor rolls back (the episode ends)."""
    invalid_action_penalty: float = Field(0.05, ge=0)
    """Penalty when an action the masks forbid reaches the env (it is executed as WAIT)."""

    @model_validator(mode="before")
    @classmethod
    def _withering_defaults_to_fossil(cls, data):
        potentials = data.get("stage_potentials") if isinstance(data, dict) else None
        if isinstance(potentials, dict) and "WITHERING" not in potentials and "FOSSILIZED" in potentials:
            data = {**data, "stage_potentials": {**potentials, "WITHERING": potentials["FOSSILIZED"]}}
        return data

    @model_validator(mode="after")
    def _all_stages(self) -> "RewardConfig":
        from esper.leyline.stages import Stage

        missing = {s.name for s in Stage} - set(self.stage_potentials)
        extra = set(self.stage_potentials) - {s.name for s in Stage}
        if missing or extra:
            raise ValueError(f"reward.stage_potentials must name every stage exactly (missing {sorted(missing)}, unknown {sorted(extra)})")
        return self


def potential(reports: Sequence[SlotReport], cfg: RewardConfig) -> float:
    """Φ(s): the sum of the slots' stage potentials."""
    return sum(cfg.stage_potentials[r.stage.name] for r in reports)


@dataclass(frozen=True)
class RewardStep:
    """One env step as the reward sees it."""

    metric_before: float
    """The task's validation metric before the step's epoch."""
    metric_after: float
    """… and after it."""
    phi_before: float
    """Φ before the decision."""
    phi_after: float
    """Φ after the epoch (a terminal state's Φ counts as 0: shaping telescopes)."""
    excess_ratio: float
    """(P_fossilized + P_active_seeds) / P_host after the step."""
    episode_steps: int
    """Steps in a full episode (rent is charged per step)."""
    step_flops: float
    """Training FLOPs the step's epoch spent."""
    episode_flops: float
    """The run's compute budget (esper/tolaria/trainer.py `compute_budget`): compute rent is a fraction of it."""
    op: Op
    """The op that was executed (an invalid action runs as WAIT)."""
    terminal: bool
    rolled_back: bool
    invalid: bool
    pruned_ratio: float = 0.0
    """Parameters of withered fossils culled in this step (by Tamiyo or Emrakul) / P_host."""


RewardTerm = Callable[[RewardConfig, RewardStep], float]


def metric_gain(c: RewardConfig, s: RewardStep) -> float:
    return c.acc_weight * (s.metric_after - s.metric_before)


def shaping(c: RewardConfig, s: RewardStep) -> float:
    phi_next = 0.0 if (s.terminal or s.rolled_back) else s.phi_after
    return c.pbrs_weight * (c.gamma * phi_next - s.phi_before)


def rent(c: RewardConfig, s: RewardStep) -> float:
    return -c.rent_lambda * s.excess_ratio / max(s.episode_steps, 1)


def compute_rent(c: RewardConfig, s: RewardStep) -> float:
    return -c.compute_rent_lambda * s.step_flops / max(s.episode_flops, 1.0)


def action_cost(c: RewardConfig, s: RewardStep) -> float:
    costs = {Op.GERMINATE: c.germinate_cost, Op.ADVANCE: c.advance_cost, Op.CULL: c.cull_cost,
             Op.WITHER: c.wither_cost, Op.REVIVE: c.revive_cost}
    return -costs.get(s.op, 0.0)


def prune(c: RewardConfig, s: RewardStep) -> float:
    return c.prune_weight * s.pruned_ratio


def terminal(c: RewardConfig, s: RewardStep) -> float:
    return c.terminal_weight * s.metric_after if s.terminal and not s.rolled_back else 0.0


def death(c: RewardConfig, s: RewardStep) -> float:
    return -c.death_penalty if s.rolled_back else 0.0


def invalid(c: RewardConfig, s: RewardStep) -> float:
    return -c.invalid_action_penalty if s.invalid else 0.0


REWARD_TERMS: dict[str, RewardTerm] = {
    "metric": metric_gain, "shaping": shaping, "rent": rent, "compute_rent": compute_rent, "action_cost": action_cost,
    "prune": prune, "terminal": terminal, "death": death, "invalid": invalid,
}
"""Every term of the reward, signed (a cost is negative); the reward is their sum, in this order."""


def compute_reward(cfg: RewardConfig, step: RewardStep) -> dict[str, float]:
    """Each term's signed contribution (the env logs them); the step's reward is `sum(terms.values())`."""
    return {name: term(cfg, step) for name, term in REWARD_TERMS.items()}
