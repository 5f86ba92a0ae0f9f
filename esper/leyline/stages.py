"""Seed lifecycle stages and the single transition table every other module reads."""

from __future__ import annotations

from enum import IntEnum


class Stage(IntEnum):
    """Lifecycle stage of a seed slot (the integer is the one-hot index in observations)."""

    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    HOLDING = 4
    FOSSILIZED = 5
    CULLED = 6
    EMBARGOED = 7
    RESETTING = 8


# The one transition table. Masks, gates, slots, rewards and tests all read it.
TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.DORMANT: frozenset({Stage.GERMINATED}),
    Stage.GERMINATED: frozenset({Stage.TRAINING, Stage.CULLED}),
    Stage.TRAINING: frozenset({Stage.BLENDING, Stage.CULLED}),
    Stage.BLENDING: frozenset({Stage.HOLDING, Stage.CULLED}),
    Stage.HOLDING: frozenset({Stage.FOSSILIZED, Stage.CULLED}),
    Stage.FOSSILIZED: frozenset(),
    Stage.CULLED: frozenset({Stage.EMBARGOED}),
    Stage.EMBARGOED: frozenset({Stage.RESETTING}),
    Stage.RESETTING: frozenset({Stage.DORMANT}),
}

# The forward step a controller's ADVANCE command takes from each stage (the "happy path").
ADVANCE_TARGET: dict[Stage, Stage] = {
    Stage.GERMINATED: Stage.TRAINING,
    Stage.TRAINING: Stage.BLENDING,
    Stage.BLENDING: Stage.HOLDING,
    Stage.HOLDING: Stage.FOSSILIZED,
}

# Stages in which a seed module exists and is still on probation (can be culled).
LIVE_STAGES: frozenset[Stage] = frozenset({Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING})
# Stages in which the seed's output reaches the model's output (α > 0 possible).
CONTRIBUTING_STAGES: frozenset[Stage] = frozenset({Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED})
# Stages the slot leaves by itself, on an epoch tick, with no command.
AUTOMATIC_STAGES: frozenset[Stage] = frozenset({Stage.CULLED, Stage.EMBARGOED, Stage.RESETTING})


def is_legal(src: Stage, dst: Stage) -> bool:
    """True when the table allows src → dst."""
    return dst in TRANSITIONS[src]


def _check_table() -> None:
    # Guard the table's own invariants at import: every advance target is a legal transition,
    # every live stage can be culled, and only FOSSILIZED is terminal.
    for src, dst in ADVANCE_TARGET.items():
        assert is_legal(src, dst), (src, dst)
    for src in LIVE_STAGES:
        assert is_legal(src, Stage.CULLED), src
    assert [s for s, out in TRANSITIONS.items() if not out] == [Stage.FOSSILIZED]


_check_table()
