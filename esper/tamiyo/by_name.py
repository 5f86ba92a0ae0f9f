"""Controllers by the names scripts use: wait, random, heuristic, ppo, ppo-sampled, plan:…, and eps:ε:NAME."""

from __future__ import annotations

from typing import Callable

from esper.tamiyo.heuristic import HeuristicTamiyo
from esper.tamiyo.simple import NoisyTamiyo, PlanTamiyo, RandomTamiyo, StaticTamiyo

NAMES_HELP = ("wait, random, heuristic, ppo, ppo-sampled (need an agent), plan:BLUEPRINT@SLOT[+BLUEPRINT@SLOT…][,epoch=E] "
              "(germinate in that order, one per decision, from the first epoch or epoch E; advance through every gate "
              "at once), or eps:ε:NAME (NAME, but a random legal action with probability ε)")


def controller_factory(name: str, spec=None, agent=None, seed: int = 0) -> Callable[[], object]:
    """A function that builds a fresh controller `name` (one per episode set, so each starts from the same state).
    `spec` (the plane's ActionSpec) checks a plan now rather than at its first decision; `agent` serves ppo names.
    Raises ValueError naming what is wrong."""
    if name.startswith("eps:"):
        eps, _, base = name.removeprefix("eps:").partition(":")
        try:
            epsilon = float(eps)
        except ValueError:
            epsilon = -1.0
        if not 0.0 <= epsilon <= 1.0 or not base:
            raise ValueError(f"controller {name!r}: expected eps:ε:NAME with 0 ≤ ε ≤ 1")
        make_base = controller_factory(base, spec, agent, seed)
        return lambda: NoisyTamiyo(make_base(), epsilon, seed, name=name)
    if name.startswith("plan:"):
        plan = PlanTamiyo.parse(name.removeprefix("plan:"))
        if spec is not None:
            plan.check(spec)
        return lambda: PlanTamiyo(plan.plan, plan.tempo, plan.curve, plan.start_epoch)
    if name in ("ppo", "ppo-sampled"):
        if agent is None:
            raise ValueError(f"controller {name!r} needs an agent (agent.pt)")
        from esper.tamiyo.neural import NeuralTamiyo

        return lambda: NeuralTamiyo(agent, sample=name == "ppo-sampled", seed=seed)
    simple = {"wait": StaticTamiyo, "random": lambda: RandomTamiyo(seed=seed), "heuristic": HeuristicTamiyo}
    if name not in simple:
        raise ValueError(f"unknown controller {name!r}; known: {NAMES_HELP}")
    return simple[name]


def plan_space(spec, k: int, starts: tuple[int, ...] | list[int] = (0,)) -> list[str]:
    """Every `plan:` of 1..k seeds in distinct slots (germinated deepest slot first), any blueprint in each,
    started at each epoch of `starts`."""
    from itertools import combinations, product

    deep_first = list(reversed(spec.slots))
    plans = []
    for n in range(1, k + 1):
        for slots in combinations(deep_first, n):
            for bps in product(spec.blueprints, repeat=n):
                plan = "plan:" + "+".join(f"{b}@{s}" for b, s in zip(bps, slots))
                plans += [plan + (f",epoch={e}" if e else "") for e in starts]
    return plans


def controller_names(names: list[str], spec, plans: int = 0) -> list[str]:
    """Agent-free controllers `names`, checked against the plane `spec` (ValueError naming the bad one), then every
    plan of 1..`plans` seeds not already named."""
    for name in names:
        controller_factory(name, spec)
    return list(names) + [p for p in plan_space(spec, plans) if p not in names]
