"""The heuristic reaper: audit one stable fossil at a time by withering it; cull it if the churn does not pay its
rent, revive it if it does (or as soon as withering visibly hurts)."""

from __future__ import annotations

from esper.emrakul.config import EmrakulConfig
from esper.leyline import FactoredAction, Op, SlotReport, Stage
from esper.leyline.control import Controller, Decision, Observation


class EmrakulReaper:
    """Decides one audit step per decision point, in the audit layout (Observation from `Run.observe_audits`).

    Churn (the Run's: the validation metric when the audit began − now) is judged against the metric's trend
    before the audit: what the run would have gained meanwhile counts as lost too (`trend_window`). Verdict of a
    withered fossil (α = 0 for `settle_epochs`): cull when churn ≤ λ·(seed params / host params) +
    cull_margin — accuracy minus rent, not accuracy alone — else revive. Which fossil first: the one whose last
    measured contribution pays its rent least."""

    name = "emrakul"

    def __init__(self, cfg: EmrakulConfig, wither_tempo: int) -> None:
        self.cfg, self.wither_tempo = cfg, wither_tempo
        self.zero_since: dict[str, int] = {}  # slot → first epoch it was seen withered to α = 0
        self.churns: dict[str, list[tuple[int, float]]] = {}  # slot → (epoch seen, trend-corrected churn)
        self.started: dict[str, tuple[int, float]] = {}  # slot → (epoch its audit began, metric trend then)
        self.revived_at: dict[str, int] = {}  # slot → epoch its last audit ended in a revival

    def decide(self, obs: Observation) -> Decision:
        s, spec = obs.signals, obs.spec
        for r in obs.reports:  # every withered seed's clock starts when it reaches α = 0, whoever is judged first
            if r.stage is Stage.WITHERING and r.alpha == 0.0:
                self.zero_since.setdefault(r.name, s.epoch)
            if r.stage is Stage.WITHERING and r.churn is not None:
                began, trend = self.started.get(r.name, (s.epoch, 0.0))  # (an audit Tamiyo began: no trend)
                self.churns.setdefault(r.name, []).append((s.epoch, r.churn + trend * (s.epoch - began)))
        for i, r in enumerate(obs.reports):
            if r.stage is Stage.WITHERING:
                verdict = self._judge(r, s)
                if verdict is not None:
                    op, reason = verdict
                    if op is Op.REVIVE:
                        self.revived_at[r.name] = s.epoch
                    for memory in (self.zero_since, self.churns, self.started):
                        memory.pop(r.name, None)
                    return self._checked(obs, FactoredAction(op, i), reason)
        in_flight = sum(r.stage is Stage.WITHERING for r in obs.reports)
        if in_flight >= self.cfg.concurrent or not self._audit_fits(s):
            return Decision(FactoredAction(Op.WAIT), "emrakul: waiting")
        candidates = [(self._surplus(r, s), i) for i, r in enumerate(obs.reports) if self._auditable(r, s.epoch)]
        if not candidates:
            return Decision(FactoredAction(Op.WAIT), "emrakul: nothing to audit")
        surplus, i = min(candidates)
        self.started[spec.slots[i]] = (s.epoch, self._trend(s.metric_history))
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
        """REVIVE or CULL a withering seed now, or None (let it wither on). One epoch's validation metric is noisy:
        an early revival needs the mean of the last two churns above `revive_above`; the verdict is the mean churn
        of the epochs trained at α = 0 (those reported after the decision that first saw α = 0)."""
        seen = self.churns.get(r.name, [])
        recent = [c for _, c in seen[-2:]]
        if len(recent) == 2 and sum(recent) / 2 > self.cfg.revive_above:
            return Op.REVIVE, f"churn {sum(recent) / 2:+.4f} (last two) > revive_above {self.cfg.revive_above}"
        if r.alpha > 0.0:
            return None
        since = self.zero_since[r.name]
        settled = [c for epoch, c in seen if epoch > since]
        if s.epoch - since < self.cfg.settle_epochs or not settled:
            return None
        churn = sum(settled) / len(settled)
        bar = self._rent(r, s) + self.cfg.cull_margin
        if churn <= bar:
            return Op.CULL, f"churn {churn:+.4f} ≤ rent {bar:.4f}"
        return Op.REVIVE, f"churn {churn:+.4f} > rent {bar:.4f}"

    def _trend(self, history) -> float:
        """The metric's gain per epoch before the audit (least-squares slope over the last `trend_window` epochs,
        never below 0): the churn judged is the metric the run would have reached on that trend − the metric it
        has, so a seed's loss is not hidden by the progress training makes meanwhile."""
        points = list(history)[-(self.cfg.trend_window + 1):] if self.cfg.trend_window else []
        if len(points) < 2:
            return 0.0
        n, mean_x, mean_y = len(points), (len(points) - 1) / 2, sum(points) / len(points)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(points)) / sum((x - mean_x) ** 2 for x in range(n))
        return max(slope, 0.0)

    def _auditable(self, r: SlotReport, epoch: int) -> bool:
        if r.stage is not Stage.FOSSILIZED:
            return False
        if r.name not in self.revived_at:
            return r.epochs_in_stage >= self.cfg.stable_epochs
        after = self.cfg.reaudit_after
        return after is not None and epoch - self.revived_at[r.name] >= after

    def _audit_fits(self, s) -> bool:
        """An audit started now can reach its verdict before the run ends (and the run is not nearly over)."""
        length = self.wither_tempo + self.cfg.settle_epochs + 1
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
