"""Baseline controllers for fair comparisons: never grow, grow on a fixed plan or schedule, act at random, or
follow another controller with ε-noise (for offline data)."""

from __future__ import annotations

from esper.leyline import FactoredAction, Op
from esper.leyline.control import Decision, Observation
from esper.tamiyo.registry import ControllerRequest, controller_factory, register_controller


class WaitTamiyo:
    """Never grows: always WAIT (the static host of a comparison, the WAIT-only baseline)."""

    name = "wait"

    def decide(self, obs: Observation) -> Decision:
        return Decision(FactoredAction(Op.WAIT), "wait")


def check_offered(spec, **wanted: list) -> None:
    """Raise ValueError naming the first slot/blueprint/tempo/curve a fixed schedule wants that the plane lacks."""
    offered = {"slot": spec.slots, "blueprint": spec.blueprints, "tempo": spec.tempos,
               "curve": tuple(c.value for c in spec.curves)}
    for what, values in wanted.items():
        for value in values:
            if value not in offered[what]:
                raise ValueError(f"schedule {what} {value!r} is not offered by the plane (offered: {list(offered[what])})")


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


class PlanTamiyo:
    """A fixed growth plan of several seeds: germinates `plan`'s (slot, blueprint) pairs in order, one per decision
    from epoch `start_epoch` on (as soon as the slot is dormant and the masks allow), germinations before advances,
    and advances every seed through each gate as soon as it opens (fossilizes whatever the contribution). What a
    plan is worth on a world is the yardstick for a trained Tamiyo (`evaluate_tamiyo.py --controllers wait
    plan:conv_light@block3`); with a later start it is the comparison's fixed-schedule arm."""

    name = "plan"

    def __init__(self, plan: list[tuple[str, str]], tempo: int = 3, curve: str = "linear", start_epoch: int = 0) -> None:
        if not plan:
            raise ValueError("a plan needs at least one (slot, blueprint)")
        self.plan, self.tempo, self.curve, self.start_epoch = list(plan), tempo, curve, start_epoch
        self.reset()

    @staticmethod
    def parse_pairs(text: str) -> list[tuple[str, str]]:
        """'conv_light@block3+conv_heavy@block1' → [('block3', 'conv_light'), ('block1', 'conv_heavy')]."""
        pairs = [part.split("@") for part in text.split("+")]
        if any(len(p) != 2 or not all(p) for p in pairs):
            raise ValueError(f"plan {text!r}: expected blueprint@slot[+blueprint@slot…]")
        return [(slot, blueprint) for blueprint, slot in pairs]

    @classmethod
    def parse(cls, text: str, tempo: int = 3, curve: str = "linear") -> "PlanTamiyo":
        """'conv_light@block3+conv_heavy@block1' → germinate conv_light in block3 first, then conv_heavy in block1;
        a suffix ',epoch=8' starts the plan at epoch 8 (a fixed growth *schedule*)."""
        plan, sep, start = text.partition(",")
        if sep and (not start.startswith("epoch=") or not start.removeprefix("epoch=").isdigit()):
            raise ValueError(f"plan {text!r}: expected blueprint@slot[+blueprint@slot…][,epoch=N]")
        return cls(cls.parse_pairs(plan), tempo, curve, int(start.removeprefix("epoch=")) if sep else 0)

    def reset(self) -> None:
        self.next_seed = 0

    def check(self, spec) -> None:
        """Raise ValueError naming what the plan wants that the plane (an ActionSpec) does not offer."""
        check_offered(spec, slot=[s for s, _ in self.plan], blueprint=[b for _, b in self.plan], tempo=[self.tempo],
                      curve=[self.curve])

    def decide(self, obs: Observation) -> Decision:
        spec = obs.spec
        if self.next_seed == 0:  # the plane cannot change mid-episode: check it once, on the first decision
            self.check(spec)
        if self.next_seed < len(self.plan) and obs.signals.epoch >= self.start_epoch:
            slot, blueprint = self.plan[self.next_seed]
            curve = next(c for c in spec.curves if c.value == self.curve)
            action = FactoredAction(Op.GERMINATE, spec.slots.index(slot), spec.blueprints.index(blueprint),
                                    spec.blend_index(self.tempo, curve))
            if obs.masks.allows(action):
                self.next_seed += 1
                return Decision(action, f"plan: germinate {blueprint} in {slot}")
        for slot, _ in self.plan:
            advance = FactoredAction(Op.ADVANCE, spec.slots.index(slot))
            if obs.masks.allows(advance):
                return Decision(advance, f"plan: {slot} gate open")
        return Decision(FactoredAction(Op.WAIT), "plan: waiting")


class ScheduleTamiyo(PlanTamiyo):
    """One seed on a fixed schedule: germinates `blueprint` in `slot` at epoch `germinate_epoch` (or the first
    decision after it the masks allow), then advances it through every gate as soon as it opens."""

    name = "schedule"

    def __init__(self, germinate_epoch: int, slot: str, blueprint: str, tempo: int, curve: str = "linear") -> None:
        super().__init__([(slot, blueprint)], tempo, curve, start_epoch=germinate_epoch)


class NoisyTamiyo:
    """`base`, except that with probability `epsilon` a uniformly random legal action is taken instead: ε-noisy
    demonstrations for offline data. The base is consulted every decision, so a stateful one (a plan) keeps its
    own course — a germination the noise replaced is not retried."""

    def __init__(self, base, epsilon: float, seed: int = 0, name: str | None = None) -> None:
        import numpy as np

        self.base, self.epsilon = base, epsilon
        self.random, self.rng = RandomTamiyo(seed), np.random.default_rng(seed + 1)
        self.name = name or f"eps:{epsilon:g}:{base.name}"

    def reset(self) -> None:
        if hasattr(self.base, "reset"):
            self.base.reset()

    def decide(self, obs: Observation) -> Decision:
        decision = self.base.decide(obs)
        return self.random.decide(obs) if self.rng.random() < self.epsilon else decision


@register_controller("wait", help="never grow (the static host)")
def _wait(request: ControllerRequest):
    return WaitTamiyo


@register_controller("random", help="a uniformly random legal action")
def _random(request: ControllerRequest):
    return lambda: RandomTamiyo(seed=request.seed)


@register_controller("plan:", help="BLUEPRINT@SLOT[+BLUEPRINT@SLOT…][,epoch=E] (germinate in that order, one per "
                     "decision, from the first epoch or epoch E; advance through every gate at once)")
def _plan(request: ControllerRequest):
    plan = PlanTamiyo.parse(request.argument)
    if request.spec is not None:
        plan.check(request.spec)
    return lambda: PlanTamiyo(plan.plan, plan.tempo, plan.curve, plan.start_epoch)


@register_controller("eps:", help="ε:NAME (controller NAME, but a random legal action with probability ε)")
def _noisy(request: ControllerRequest):
    eps, _, base = request.argument.partition(":")
    try:
        epsilon = float(eps)
    except ValueError:
        epsilon = -1.0
    if not 0.0 <= epsilon <= 1.0 or not base:
        raise ValueError(f"controller {request.name!r}: expected eps:ε:NAME with 0 ≤ ε ≤ 1")
    make_base = controller_factory(base, request.spec, request.agent, request.seed)
    return lambda: NoisyTamiyo(make_base(), epsilon, request.seed, name=request.name)
