"""World families: the fields of a world that are drawn anew for every episode, and how one world is drawn.

A family is a world plus `vary: {dotted.path: variation}`; each episode draws every varied field (in sorted path
order, from the episode's own generator) and plays the resulting plain world. The draw is logged with the episode.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
from pydantic import model_validator

from esper.leyline.base import EsperModel
from esper.leyline.experiment import set_dotted


class Choice(EsperModel):
    """One of `choice`, each equally likely (numbers, lists, whole sections such as a data config)."""

    choice: list[Any]
    """The values to choose from (at least one)."""

    @model_validator(mode="after")
    def _non_empty(self) -> "Choice":
        if not self.choice:
            raise ValueError("a choice needs at least one value")
        return self

    def draw(self, rng: np.random.Generator) -> Any:
        return self.choice[int(rng.integers(len(self.choice)))]

    def corners(self) -> list[Any]:
        return list(self.choice)


class Range(EsperModel):
    """A number in [low, high]: uniform, or log-uniform (`log`), rounded to an integer (`integer`)."""

    low: float
    """Smallest value."""
    high: float
    """Largest value."""
    log: bool = False
    """Log-uniform (for scales such as a rent λ; needs low > 0)."""
    integer: bool = False
    """Round to the nearest integer (for counts such as a data size or epochs)."""

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high (got {self.low}, {self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def _finish(self, x: float) -> float | int:
        return int(round(x)) if self.integer else float(x)

    def draw(self, rng: np.random.Generator) -> float | int:
        if self.log:
            return self._finish(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self._finish(rng.uniform(self.low, self.high))

    def corners(self) -> list[Any]:
        return [self._finish(self.low), self._finish(self.high)]


Variation = Union[Choice, Range]


def draw_world(world, rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
    """One world of `world`'s family (a plain world: `vary` empty) and the values drawn, by path."""
    drawn = {path: world.vary[path].draw(rng) for path in sorted(world.vary)}
    return with_values(world, drawn), drawn


def with_values(world, values: dict[str, Any]):
    """`world` with each dotted path set to its value, validated, as a plain world (no `vary`)."""
    tree = world.model_dump(mode="json", exclude={"vary"})
    for path, value in values.items():
        set_dotted(tree, path, value)
    return type(world).model_validate(tree)


def corner_worlds(world) -> list[tuple[str, Any]]:
    """(path, value) of every choice and both ends of every range: the draws a start-up check tries."""
    return [(path, value) for path in sorted(world.vary) for value in world.vary[path].corners()]
