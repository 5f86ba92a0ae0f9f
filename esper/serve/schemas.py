"""HTTP request and response models of the served Tamiyo (pydantic v2: closed, bounded, finite)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from esper.leyline import FactoredAction, Op

MAX_VECTOR = 4096  # entries per feature vector or mask: far above any plane's size, small enough to bound work
MAX_BATCH = 1024  # observations per batch request

DomainName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Vector = Annotated[list[Finite], Field(min_length=1, max_length=MAX_VECTOR)]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "0.1" or true is not a number here


class ObservationIn(Closed):
    """One decision point, as the policy sees it: the env's feature vector and flat action mask."""

    features: Vector
    """Feature vector in the policy's layout (GET /v1/policy lists the names)."""
    action_mask: Vector
    """Flat concatenated per-head mask (1 = legal, 0 = masked), in the policy's layout."""


class DecideRequest(ObservationIn):
    """POST /v1/decide."""

    sample: bool = False
    """Sample from the policy instead of taking each head's most likely choice."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    """Seed of the sampler (same seed, same observation → same action); random when absent."""
    domain: DomainName | None = None
    """Which domain's policy decides (GET /v1/policy lists them); absent = the server's default domain."""


class DecideBatchRequest(Closed):
    """POST /v1/decide/batch: many observations answered in one pass."""

    observations: Annotated[list[ObservationIn], Field(min_length=1, max_length=MAX_BATCH)]
    """The observations, answered in order."""
    sample: bool = False
    """Sample every row instead of deciding greedily."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    """Seed of row i's sampler is seed + i."""
    domain: DomainName | None = None
    """Which domain's policy decides every row; absent = the server's default domain."""


class ActionOut(Closed):
    op: int
    slot: int
    blueprint: int
    blend: int
    op_name: str

    @classmethod
    def of(cls, action: FactoredAction) -> "ActionOut":
        return cls(op=int(action.op), slot=action.slot, blueprint=action.blueprint, blend=action.blend,
                   op_name=Op(action.op).name)


class DecisionOut(Closed):
    action: ActionOut
    """The factored action (indices into the heads; op_name for reading)."""
    probability: float
    """Probability of this action under the policy (product over the heads)."""
    value: float
    """The critic's estimate of the return from this observation."""
    policy_version: str
    """Content hash of the agent.pt that decided."""


class BatchOut(Closed):
    decisions: list[DecisionOut]


class ErrorOut(Closed):
    error: str
    """What was wrong, in words."""
    detail: list[dict] | None = None
    """Per-field validation errors (location and message) when the body did not match the schema."""
