"""The reward: Δaccuracy + PBRS stage potentials − rent − action costs (+ terminal accuracy, − death penalty)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from esper.leyline import Op, SlotReport
from esper.leyline.world import RewardConfig


def potential(reports: Sequence[SlotReport], cfg: RewardConfig) -> float:
    """Φ(s): the sum of the slots' stage potentials."""
    return sum(cfg.stage_potentials[r.stage.name] for r in reports)


@dataclass(frozen=True)
class RewardTerms:
    accuracy: float
    shaping: float
    rent: float
    action_cost: float
    terminal: float
    death: float
    invalid: float

    @property
    def total(self) -> float:
        return self.accuracy + self.shaping - self.rent - self.action_cost + self.terminal - self.death - self.invalid


def compute_reward(cfg: RewardConfig, *, acc_before: float, acc_after: float, phi_before: float, phi_after: float,
                   excess_ratio: float, episode_steps: int, op: Op, terminal: bool, rolled_back: bool,
                   invalid: bool) -> RewardTerms:
    """All terms of one step's reward, separately (the env logs them; tests check each)."""
    cost = {Op.GERMINATE: cfg.germinate_cost, Op.ADVANCE: cfg.advance_cost, Op.CULL: cfg.cull_cost}.get(op, 0.0)
    phi_next = 0.0 if (terminal or rolled_back) else phi_after  # Φ of a terminal state is 0: shaping telescopes
    return RewardTerms(
        accuracy=cfg.acc_weight * (acc_after - acc_before),
        shaping=cfg.pbrs_weight * (cfg.gamma * phi_next - phi_before),
        rent=cfg.rent_lambda * excess_ratio / max(episode_steps, 1),
        action_cost=cost,
        terminal=cfg.terminal_weight * acc_after if terminal and not rolled_back else 0.0,
        death=cfg.death_penalty if rolled_back else 0.0,
        invalid=cfg.invalid_action_penalty if invalid else 0.0,
    )
