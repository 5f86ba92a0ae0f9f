"""A built-in, procedurally generated 10-class vision task (no download; deterministic from a seed).

Each 32×32 RGB image shows one shape (disk, square, ring, cross, triangle) filled with a stripe texture of
low or high frequency — class = shape × texture — at a random position, scale, rotation and colour, on a
noisy background with a smaller distractor shape. Telling the classes apart needs both local texture and
global shape, so a tiny host underfits and added capacity helps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NUM_CLASSES = 10
SHAPES = ("disk", "square", "ring", "cross", "triangle")
FREQS = (1.5, 4.0)  # stripe cycles per shape radius (low, high)


def _shape_mask(shape_id: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Per-sample shape masks. u, v: (N, S, S) coordinates in units of the shape's radius."""
    r = torch.sqrt(u * u + v * v)
    masks = torch.stack(
        [
            r < 1.0,
            torch.maximum(u.abs(), v.abs()) < 0.8,
            (r > 0.55) & (r < 1.0),
            ((u.abs() < 0.3) & (v.abs() < 1.0)) | ((v.abs() < 0.3) & (u.abs() < 1.0)),
            (v > -0.6) & (v < 1.0 - 1.8 * u.abs()),
        ],
        dim=1,
    )  # (N, 5, S, S)
    return masks[torch.arange(len(shape_id)), shape_id]  # (N, S, S)


def _coords(n: int, size: int, gen: Tensor | torch.Generator, scale: tuple[float, float]) -> tuple[Tensor, Tensor]:
    axis = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")  # (S, S)
    cx, cy = (torch.rand(2, n, 1, 1, generator=gen) - 0.5) * 0.9
    radius = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 1, 1, generator=gen)
    theta = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    dx, dy = xx - cx, yy - cy  # (N, S, S)
    u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / radius
    v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / radius
    return u, v


def make_synthetic(n: int, seed: int, size: int = 32, noise: float = 0.12) -> tuple[Tensor, Tensor]:
    """`n` images as uint8 (N, 3, size, size) and labels int64 (N,), identical for the same seed."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    shape_id, freq_id = labels // 2, labels % 2
    u, v = _coords(n, size, gen, scale=(0.3, 0.55))
    mask = _shape_mask(shape_id, u, v)
    freq = torch.tensor(FREQS)[freq_id][:, None, None]
    stripes = 0.5 + 0.5 * torch.sin(math.pi * freq * u)  # (N, S, S) in [0, 1]
    # Distractor: a random shape, plain (no texture), smaller, elsewhere.
    du, dv = _coords(n, size, gen, scale=(0.12, 0.22))
    distractor = _shape_mask(torch.randint(0, len(SHAPES), (n,), generator=gen), du, dv)
    bg = torch.rand(n, 3, 1, 1, generator=gen) * 0.6
    fg = torch.rand(n, 3, 1, 1, generator=gen) * 0.7 + 0.3
    dc = torch.rand(n, 3, 1, 1, generator=gen)
    img = bg.expand(n, 3, size, size).clone()
    img = torch.where(distractor[:, None], dc, img)
    img = torch.where(mask[:, None], fg * (0.35 + 0.65 * stripes[:, None]), img)
    img = img + noise * torch.randn(n, 3, size, size, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels
