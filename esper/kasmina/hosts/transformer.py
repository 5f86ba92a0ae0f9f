"""A GPT-style character transformer host: token + position embeddings, pre-norm causal blocks with an injection
point after each, a final norm and a linear head to next-token logits."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from esper.kasmina.layers import Block
from esper.kasmina.protocol import Inject, InjectionPoint
from esper.leyline.config import TransformerHostConfig


class TransformerHost(nn.Module):
    """(B, T) token ids → (B, T, vocab) logits; the features at each injection point are (B, T, D)."""

    def __init__(self, config: TransformerHostConfig | None = None) -> None:
        super().__init__()
        self.config = config or TransformerHostConfig()
        d = self.config.dims()
        width, t = d["n_embd"], self.config.block_size
        self.tok_emb, self.pos_emb = nn.Embedding(self.config.vocab_size, width), nn.Embedding(t, width)
        self.blocks = nn.ModuleList(Block(width, d["n_head"]) for _ in range(d["n_layer"]))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.config.vocab_size, bias=False)
        self._points = tuple(InjectionPoint(f"block{i + 1}", width, "tokens", tokens=t) for i in range(d["n_layer"]))
        self._init_weights(d["n_layer"])

    def _init_weights(self, n_layer: int) -> None:
        """GPT-2 initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/√(2·layers)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:  # (LayerNorm weights stay 1)
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02)

    def injection_points(self) -> tuple[InjectionPoint, ...]:
        return self._points

    def template_at(self, point: str) -> nn.Module:
        """The block whose output feeds `point` (what a `block_copy` seed there starts as)."""
        return self.blocks[[p.name for p in self._points].index(point)]

    def forward_through(self, x: Tensor, inject: Inject) -> Tensor:
        t = x.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than the host's block_size {self.config.block_size}")
        h = self.tok_emb(x) + self.pos_emb(torch.arange(t, device=x.device))  # (B, T) → (B, T, D)
        for block, point in zip(self.blocks, self._points):
            h = inject(point.name, block(h))
        return self.head(self.ln_f(h))  # (B, T, D) → (B, T, vocab)

    def forward(self, x: Tensor) -> Tensor:
        """The bare host (no plane)."""
        return self.forward_through(x, lambda name, h: h)

    def host_spec(self) -> dict[str, Any]:
        return {"name": "transformer", "config": self.config.model_dump(mode="json")}
