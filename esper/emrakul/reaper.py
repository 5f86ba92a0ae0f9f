"""The heuristic reaper: audit stable fossils by withering them; cull one whose paired churn does not pay its rent,
revive it if it does (or as soon as the churn is clearly high)."""

from __future__ import annotations

from esper.emrakul.config import EmrakulConfig
from esper.leyline import FactoredAction, Op, SlotReport, Stage
from esper.leyline.control import Controller, Decision, Observation


class EmrakulReaper:
    """Decides one audit step per decision point, in the audit layout (Observation from `Run.observe_audits`).

    Churn (the Run's, each epoch the withering seed was dropped per sample with probability 1 − α, 0 < α < 1):
    the validation metric with the seed whole − without it, on the same examples, from the fused counterfactual
    pass. Early in an audit the host still leans on the seed, late in it the seed has gone stale; α falling
    linearly weighs both sides alike, so the verdict, when α reaches 0, is the mean of the audit's churns: cull when
    it is ≤ λ·(seed params / host params) + cull_margin — accuracy minus rent, not accuracy alone — else revive.
    Which fossil first: the one whose last measured contribution pays its rent least."""

    name = "emrakul"

    def __init__(self, cfg: EmrakulConfig, wither_tempo: int) -> None:
        if wither_tempo < 2:
            raise ValueError(f"kasmina.wither_tempo must be ≥ 2 for Emrakul's audits (got {wither_tempo}): "
                             "with 1 the seed's α jumps from 1 to 0 and no epoch trains with and without it")
        self.cfg, self.wither_tempo = cfg, wither_tempo
        self.churns: dict[str, list[float]] = {}  # slot → paired churns measured in its audit so far
        self.revived_at: dict[str, int] = {}  # slot → epoch its last audit ended in a revival

    def decide(self, obs: Observation) -> Decision:
        s, spec = obs.signals, obs.spec
        for r in obs.reports:  # each decision follows one epoch: a withering seed's churn is that epoch's
            if r.stage is Stage.WITHERING and r.churn is not None:
                self.churns.setdefault(r.name, []).append(r.churn)
        for i, r in enumerate(obs.reports):
            if r.stage is Stage.WITHERING:
                verdict = self._judge(r, s)
                if verdict is not None:
                    op, reason = verdict
                    if op is Op.REVIVE:
                        self.revived_at[r.name] = s.epoch
                    self.churns.pop(r.name, None)
                    return self._checked(obs, FactoredAction(op, i), reason)
        in_flight = sum(r.stage is Stage.WITHERING for r in obs.reports)
        if in_flight >= self.cfg.concurrent or not self._audit_fits(s):
            return Decision(FactoredAction(Op.WAIT), "emrakul: waiting")
        candidates = [(self._surplus(r, s), i) for i, r in enumerate(obs.reports) if self._auditable(r, s.epoch)]
        if not candidates:
            return Decision(FactoredAction(Op.WAIT), "emrakul: nothing to audit")
        surplus, i = min(candidates)
        self.churns.pop(spec.slots[i], None)
        return self._checked(obs, FactoredAction(Op.WITHER, i),
                             f"audit {spec.slots[i]} (contribution − rent {surplus:+.4f})")

    # ------------------------------------------------------------------ rules
    def _rent(self, r: SlotReport, s) -> float:
        """What the seed's capacity costs, in the metric's units: λ · seed params / host params."""
        weight = s.rent_lambda if self.cfg.rent_weight is None else self.cfg.rent_weight
        return weight * r.seed_params / max(s.host_params, 1)

    def _surplus(self, r: SlotReport, s) -> float:
        return (r.contribution or 0.0) - self._rent(r, s)

    def _judge(self, r: SlotReport, s) -> tuple[Op, str] | None:
        """REVIVE or CULL a withering seed now, or None (let it wither on): an early revival when the mean of the
        last two churns is above `revive_above`; the verdict once α is 0, on the mean churn of the audit."""
        seen = self.churns.get(r.name, [])
        recent = seen[-2:]
        if len(recent) == 2 and sum(recent) / 2 > self.cfg.revive_above:
            return Op.REVIVE, f"churn {sum(recent) / 2:+.4f} (last two) > revive_above {self.cfg.revive_above}"
        if r.alpha > 0.0:
            return None
        if not seen:  # withered by someone else, or rolled back mid-audit: nothing measured, keep it
            return Op.REVIVE, "no churn measured in this audit"
        churn = sum(seen) / len(seen)
        bar = self._rent(r, s) + self.cfg.cull_margin
        if churn <= bar:
            return Op.CULL, f"churn {churn:+.4f} (mean of {len(seen)}) ≤ rent {bar:.4f}"
        return Op.REVIVE, f"churn {churn:+.4f} (mean of {len(seen)}) > rent {bar:.4f}"

    def _auditable(self, r: SlotReport, epoch: int) -> bool:
        if r.stage is not Stage.FOSSILIZED:
            return False
        if r.name not in self.revived_at:
            return r.epochs_in_stage >= self.cfg.stable_epochs
        after = self.cfg.reaudit_after
        return after is not None and epoch - self.revived_at[r.name] >= after

    def _audit_fits(self, s) -> bool:
        """An audit started now can reach its verdict before the run ends (and the run is not nearly over)."""
        length = self.wither_tempo + 1
        left = s.max_epochs - s.epoch
        if s.compute_bound:  # decisions left in the budget, at the current per-epoch cost
            spent = min(s.budget_spent, 1.0)
            left = min(left, (1.0 - spent) * s.budget_host_epochs / (1.0 + s.excess_flops_ratio))
            if 1.0 - spent <= self.cfg.min_budget_left:
                return False
        elif left / max(s.max_epochs, 1) <= self.cfg.min_budget_left:
            return False
        return left >= length

    @staticmethod
    def _checked(obs: Observation, action: FactoredAction, reason: str) -> Decision:
        if not obs.masks.allows(action):  # the rules above only pick what the audit layout allows
            raise RuntimeError(f"emrakul chose a masked-out action {action} ({reason})")
        return Decision(action, reason)


def build_reaper(cfg: EmrakulConfig, wither_tempo: int) -> Controller | None:
    """The world's reaper, or None when `emrakul.enabled` is off."""
    return EmrakulReaper(cfg, wither_tempo) if cfg.enabled else None
