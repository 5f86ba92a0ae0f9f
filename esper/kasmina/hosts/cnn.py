"""A CNN host for 32×32 images: conv blocks, one injection point after each block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from torch import Tensor, nn

from esper.kasmina.protocol import Inject, InjectionPoint
from esper.leyline.registry import HostConfig


class CNNHostConfig(HostConfig):
    """The CNN host for images (esper.kasmina.hosts.cnn)."""

    name: Literal["cnn"] = "cnn"
    """Host family."""
    preset: Literal["tiny", "small", "paper", "custom"] = "small"
    """Width preset: tiny (8-16-32, cheap worlds), small (16-32-64), paper (32-64-128, the seed documents' host)."""
    widths: tuple[int, ...] | None = None
    """Channel width of each block; required when preset is custom, else taken from the preset."""
    convs_per_block: int = Field(1, ge=1, le=4)
    """3×3 conv layers per block (each block ends with an injection point)."""
    num_classes: int = Field(10, ge=2)
    """Output classes (must equal the task's output size)."""
    in_channels: int = Field(3, ge=1)
    """Input image channels."""

    @model_validator(mode="after")
    def _widths_for_custom(self) -> "CNNHostConfig":
        if self.preset == "custom" and not self.widths:
            raise ValueError("host.widths is required when host.preset is 'custom'")
        if self.widths is not None and any(w < 1 for w in self.widths):
            raise ValueError("host.widths must all be ≥ 1")
        return self


WIDTH_PRESETS: dict[str, tuple[int, ...]] = {
    "tiny": (8, 16, 32),  # cheap worlds (smoke, tests)
    "small": (16, 32, 64),  # CPU CIFAR-10 subsets
    "paper": (32, 64, 128),  # the seed documents' 3→32→64→128 host
}


def _identity(name: str, h: Tensor) -> Tensor:
    return h


class CNNHost(nn.Module):
    """Blocks of [3×3 conv → BatchNorm → ReLU] × convs_per_block, each followed by an injection point,
    then 2×2 max-pool (not after the last block), global average pool and a linear classifier."""

    def __init__(self, config: CNNHostConfig | None = None, image_size: int = 32) -> None:
        super().__init__()
        self.config = config or CNNHostConfig()
        widths = self.config.widths or WIDTH_PRESETS[self.config.preset]
        self.image_size = image_size
        blocks, points = [], []
        c_in, side = self.config.in_channels, image_size
        for i, w in enumerate(widths):
            layers: list[nn.Module] = []
            for j in range(self.config.convs_per_block):
                layers += [nn.Conv2d(c_in if j == 0 else w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            blocks.append(nn.Sequential(*layers))
            points.append(InjectionPoint(f"block{i + 1}", w, "conv2d", (side, side)))
            c_in = w
            side = side // 2 if i < len(widths) - 1 else side
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c_in, self.config.num_classes)
        self._points = tuple(points)

    def injection_points(self) -> tuple[InjectionPoint, ...]:
        return self._points

    def forward_through(self, x: Tensor, inject: Inject) -> Tensor:
        last = len(self.blocks) - 1
        for i, (block, point) in enumerate(zip(self.blocks, self._points)):
            x = inject(point.name, block(x))
            if i < last:
                x = self.pool(x)
        return self.head(x.mean(dim=(2, 3)))  # (B, C, H, W) → (B, C)

    def forward(self, x: Tensor) -> Tensor:
        """The bare host (no plane): used as the baseline in benchmarks."""
        return self.forward_through(x, _identity)

    def host_spec(self) -> dict[str, Any]:
        return {"name": "cnn", "image_size": self.image_size, "config": self.config.model_dump(mode="json")}
