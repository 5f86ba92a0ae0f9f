"""Transformer layers shared by the transformer host and the token blueprints (one implementation of each)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over (B, T, D); `n_head` heads of `head_dim` each (default D / n_head)."""

    def __init__(self, d: int, n_head: int, head_dim: int | None = None) -> None:
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim or d // n_head
        inner = n_head * self.head_dim
        self.qkv = nn.Linear(d, 3 * inner)
        self.proj = nn.Linear(inner, d)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        inner = self.n_head * self.head_dim
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, T, inner) → (B, H, T, hd)
                   for z in self.qkv(x).split(inner, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, inner))  # (B, H, T, hd) → (B, T, inner) → (B, T, D)


class FeedForward(nn.Module):
    """Position-wise MLP D → hidden → D with GELU."""

    def __init__(self, d: int, hidden: int | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(d, hidden or 4 * d)
        self.proj = nn.Linear(hidden or 4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(ln(x)), then + mlp(ln(·))."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), CausalSelfAttention(d, n_head)
        self.ln2, self.mlp = nn.LayerNorm(d), FeedForward(d)

    def residual(self, x: Tensor) -> Tensor:
        """What the block adds to its input: block(x) − x."""
        a = self.attn(self.ln1(x))
        return a + self.mlp(self.ln2(x + a))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


def zero_output(*layers: nn.Linear) -> None:
    """Zero a branch's output projections so it adds exactly 0 until trained (function-preserving graft)."""
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
