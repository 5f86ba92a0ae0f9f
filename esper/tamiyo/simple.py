"""Baseline controllers for fair comparisons: never grow, or grow on a fixed schedule."""

from __future__ import annotations

from esper.leyline import FactoredAction, Op, Stage
from esper.leyline.control import Decision, Observation


class StaticTamiyo:
    """Never grows: always WAIT (the static-host arm and the WAIT-only baseline)."""

    name = "static"

    def decide(self, obs: Observation) -> Decision:
        return Decision(FactoredAction(Op.WAIT), "static")


class ScheduleTamiyo:
    """Germinates `blueprint` in `slot` at epoch `germinate_epoch` with a fixed blend, then advances it
    through every gate as soon as the gate opens (fossilizes whatever the contribution)."""

    name = "schedule"

    def __init__(self, germinate_epoch: int, slot: str, blueprint: str, tempo: int, curve: str = "linear") -> None:
        self.germinate_epoch, self.slot, self.blueprint, self.tempo, self.curve = germinate_epoch, slot, blueprint, tempo, curve

    def _check(self, obs: Observation) -> None:
        """Fail on the first decision, not at the scheduled epoch, if the plane cannot offer the schedule."""
        spec = obs.spec
        for what, value, offered in (("slot", self.slot, spec.slots), ("blueprint", self.blueprint, spec.blueprints),
                                     ("tempo", self.tempo, spec.tempos), ("curve", self.curve, tuple(c.value for c in spec.curves))):
            if value not in offered:
                raise ValueError(f"schedule {what} {value!r} is not offered by the plane (offered: {list(offered)})")

    def decide(self, obs: Observation) -> Decision:
        self._check(obs)
        spec = obs.spec
        i = spec.slots.index(self.slot)
        report = obs.reports[i]
        if obs.signals.epoch == self.germinate_epoch and report.stage is Stage.DORMANT:
            curve = next(c for c in spec.curves if c.value == self.curve)
            action = FactoredAction(Op.GERMINATE, i, spec.blueprints.index(self.blueprint), spec.blend_index(self.tempo, curve))
            if obs.masks.allows(action):
                return Decision(action, f"scheduled germination of {self.blueprint} in {self.slot}")
        advance = FactoredAction(Op.ADVANCE, i)
        if obs.masks.allows(advance):
            return Decision(advance, f"{self.slot}: gate open in {report.stage.name}")
        return Decision(FactoredAction(Op.WAIT), "waiting for the schedule")


class RandomTamiyo:
    """Uniform over legal actions, head by head (the random baseline)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)

    def decide(self, obs: Observation) -> Decision:
        import numpy as np

        m = obs.masks
        op = int(self.rng.choice(np.flatnonzero(m.op)))
        slot = int(self.rng.choice(np.flatnonzero(m.slot[op])))
        _, bp_mask, blend_mask = m.head_masks(op, slot)
        action = FactoredAction(Op(op), slot, int(self.rng.choice(np.flatnonzero(bp_mask))), int(self.rng.choice(np.flatnonzero(blend_mask))))
        return Decision(action, "random")
