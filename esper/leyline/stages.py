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
    WITHERING = 9
    """Emrakul's audit of a fossil: α falls from 1 to 0 while the host trains on; then CULLED, or REVIVED."""


# The one transition table. Masks, gates, slots, rewards and tests all read it.
TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.DORMANT: frozenset({Stage.GERMINATED}),
    Stage.GERMINATED: frozenset({Stage.TRAINING, Stage.CULLED}),
    Stage.TRAINING: frozenset({Stage.BLENDING, Stage.CULLED}),
    Stage.BLENDING: frozenset({Stage.HOLDING, Stage.CULLED}),
    Stage.HOLDING: frozenset({Stage.FOSSILIZED, Stage.CULLED}),
    Stage.FOSSILIZED: frozenset({Stage.WITHERING}),
    Stage.WITHERING: frozenset({Stage.FOSSILIZED, Stage.CULLED}),
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
# Stages in which the seed is part of the host: it runs inside the graph and trains with the host, in the host's
# optimiser (a withering fossil still does, at a falling α).
FOSSIL_STAGES: frozenset[Stage] = frozenset({Stage.FOSSILIZED, Stage.WITHERING})
# Stages in which the seed's output reaches the model's output (α > 0 possible).
CONTRIBUTING_STAGES: frozenset[Stage] = frozenset({Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED, Stage.WITHERING})
# Stages a cull can leave from (a withering seed only once its gate G6 says α has reached 0).
CULLABLE_STAGES: frozenset[Stage] = LIVE_STAGES | {Stage.WITHERING}
# Stages of the original lifecycle, before Emrakul: an action layout without audits encodes a slot in these
# (a withering seed reads as the fossil it still is), so agents trained before WITHERING existed see what they saw.
PRE_AUDIT_STAGES: tuple[Stage, ...] = tuple(s for s in Stage if s is not Stage.WITHERING)
# Stages the slot leaves by itself, on an epoch tick, with no command.
AUTOMATIC_STAGES: frozenset[Stage] = frozenset({Stage.CULLED, Stage.EMBARGOED, Stage.RESETTING})


def is_legal(src: Stage, dst: Stage) -> bool:
    """True when the table allows src → dst."""
    return dst in TRANSITIONS[src]


def _check_table() -> None:
    # Guard the table's own invariants at import: every advance target is a legal transition, exactly the
    # cullable stages can be culled, and no stage is terminal (a fossil can be audited away).
    for src, dst in ADVANCE_TARGET.items():
        assert is_legal(src, dst), (src, dst)
    assert {s for s in Stage if is_legal(s, Stage.CULLED)} == CULLABLE_STAGES
    assert all(TRANSITIONS[s] for s in Stage)
    assert PRE_AUDIT_STAGES == tuple(Stage)[:9]  # the old one-hot layout is a prefix


_check_table()
