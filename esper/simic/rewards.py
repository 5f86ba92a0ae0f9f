"""The reward: one signed term per effect, summed — Δmetric, stage shaping, parameter rent, compute rent, action
costs, terminal metric, death penalty, invalid-action penalty.

A term is a function (RewardConfig, RewardStep) → its signed contribution; `REWARD_TERMS` lists them in order.
Adding a term is one function here, one entry in the mapping (and its weight in RewardConfig) and its test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from esper.leyline import Op, SlotReport
from esper.leyline.world import RewardConfig


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
    return -{Op.GERMINATE: c.germinate_cost, Op.ADVANCE: c.advance_cost, Op.CULL: c.cull_cost}.get(s.op, 0.0)


def terminal(c: RewardConfig, s: RewardStep) -> float:
    return c.terminal_weight * s.metric_after if s.terminal and not s.rolled_back else 0.0


def death(c: RewardConfig, s: RewardStep) -> float:
    return -c.death_penalty if s.rolled_back else 0.0


def invalid(c: RewardConfig, s: RewardStep) -> float:
    return -c.invalid_action_penalty if s.invalid else 0.0


REWARD_TERMS: dict[str, RewardTerm] = {
    "metric": metric_gain, "shaping": shaping, "rent": rent, "compute_rent": compute_rent, "action_cost": action_cost,
    "terminal": terminal, "death": death, "invalid": invalid,
}
"""Every term of the reward, signed (a cost is negative); the reward is their sum, in this order."""


def compute_reward(cfg: RewardConfig, step: RewardStep) -> dict[str, float]:
    """Each term's signed contribution (the env logs them); the step's reward is `sum(terms.values())`."""
    return {name: term(cfg, step) for name, term in REWARD_TERMS.items()}
