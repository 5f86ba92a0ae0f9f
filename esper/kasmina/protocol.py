"""How a host declares its injection points and runs its forward pass through them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence, runtime_checkable

from torch import Tensor

PointKind = Literal["conv2d", "vector", "tokens"]
Inject = Callable[[str, Tensor], Tensor]


@dataclass(frozen=True)
class InjectionPoint:
    """A place in the host where a seed slot sits (features there have this shape)."""

    name: str
    """Unique name (no dots); also the slot's name."""
    channels: int
    """Channels (conv2d: C of (B, C, H, W)) or width (vector: D of (B, D); tokens: D of (B, T, D))."""
    kind: PointKind = "conv2d"
    """Feature layout at this point; blueprints declare which kind they fit."""
    spatial: tuple[int, int] | None = None
    """conv2d: (H, W) of the features for the host's nominal input; used for FLOPs and the germination probe."""
    tokens: int | None = None
    """tokens: T of the features for the host's nominal input (its context length); used likewise."""

    def feature_shape(self, batch: int, fallback: int = 4) -> tuple[int, ...]:
        """Shape of the features here for `batch` nominal inputs (an extent the host did not declare: `fallback`)."""
        if self.kind == "conv2d":
            return (batch, self.channels, *(self.spatial or (fallback, fallback)))
        if self.kind == "tokens":
            return (batch, self.tokens or fallback, self.channels)  # (B, T, D)
        return (batch, self.channels)


@runtime_checkable
class HostProtocol(Protocol):
    """What Kasmina needs from a host model (an nn.Module). Kasmina never imports a concrete host.

    Optional: `template_at(point_name) -> nn.Module`, the host module whose output feeds that point, for
    blueprints that start as a copy of it (`block_copy`; the transformer host offers its blocks)."""

    def injection_points(self) -> Sequence[InjectionPoint]:
        """Injection points in execution order."""
        ...

    def forward_through(self, x: Tensor, inject: Inject) -> Tensor:
        """The host's forward pass, calling `h = inject(point_name, h)` at each injection point, in order."""
        ...

    def host_spec(self) -> dict[str, Any]:
        """Plain-container description that rebuilds this host (stored in the architecture manifest)."""
        ...
