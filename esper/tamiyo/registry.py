"""Controllers by name — one name everywhere (compare, evaluate, record, serve): a controller registers here once.

A name is either a plain one (`wait`, `heuristic`, `ppo`, …) or a family with arguments after a colon
(`plan:conv_light@block2,epoch=3`, `eps:0.2:heuristic`). Add a controller: write its class in one file of
esper/tamiyo/ with a `@register_controller("name", help=…)` factory beside it, and import that file in
esper/tamiyo/__init__.py (docs/extending.md, "Add a controller").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from esper.leyline.control import Controller


@dataclass(frozen=True)
class ControllerRequest:
    """What a factory gets: the name's arguments (after `prefix:`), the plane, the agent, the seed."""

    name: str
    """The full name asked for (e.g. `eps:0.2:heuristic`)."""
    argument: str
    """The text after the family's prefix (`0.2:heuristic`); empty for a plain name."""
    spec: Any = None
    """The plane's ActionSpec when known: a factory checks what it needs now, not at its first decision."""
    agent: Any = None
    """A loaded agent.pt (for controllers that play a trained policy)."""
    seed: int = 0
    """Seed of the controller's own randomness."""


Factory = Callable[[ControllerRequest], Callable[[], Controller]]
"""request → a function that builds a fresh controller (one per episode set, so each starts from one state).
Raises ValueError naming what is wrong with the request."""


@dataclass(frozen=True)
class ControllerEntry:
    name: str
    """`wait`, or a family's prefix with its colon (`plan:`)."""
    factory: Factory
    help: str
    """One line for --help: what it does; a family's starts with the syntax of its argument."""
    needs_agent: bool = False
    """Plays a trained policy: needs agent.pt."""


CONTROLLERS: dict[str, ControllerEntry] = {}


def register_controller(name: str, *, help: str, needs_agent: bool = False) -> Callable[[Factory], Factory]:
    """Decorator registering `factory` under `name` (a name ending in ':' registers a family)."""
    def add(factory: Factory) -> Factory:
        if name in CONTROLLERS:
            raise ValueError(f"controller {name!r} is already registered")
        CONTROLLERS[name] = ControllerEntry(name, factory, help, needs_agent)
        return factory
    return add


def entry_for(name: str) -> ControllerEntry:
    """The registry entry of a controller name (a plain name, or a family's prefix); ValueError if none."""
    if name in CONTROLLERS and not name.endswith(":"):
        return CONTROLLERS[name]
    prefix = name.split(":", 1)[0] + ":"
    if ":" in name and prefix in CONTROLLERS:
        return CONTROLLERS[prefix]
    raise ValueError(f"unknown controller {name!r}; known: {', '.join(CONTROLLERS)}")


def controller_factory(name: str, spec=None, agent=None, seed: int = 0) -> Callable[[], Controller]:
    """A function that builds a fresh controller `name`. `spec` (the plane's ActionSpec) lets a factory check its
    request now; `agent` serves controllers that need one. Raises ValueError naming what is wrong."""
    entry = entry_for(name)
    if entry.needs_agent and agent is None:
        raise ValueError(f"controller {name!r} needs an agent (agent.pt)")
    argument = name.removeprefix(entry.name) if entry.name.endswith(":") else ""
    return entry.factory(ControllerRequest(name, argument, spec, agent, seed))


def needs_agent(name: str) -> bool:
    return entry_for(name).needs_agent


def names_help() -> str:
    """Every registered controller, one clause each (the --controllers help of every script)."""
    return "; ".join(f"{e.name}{e.help}" if e.name.endswith(":") else f"{e.name}: {e.help}" for e in CONTROLLERS.values())


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
