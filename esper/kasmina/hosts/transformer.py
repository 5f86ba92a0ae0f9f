"""A GPT-style character transformer host: token + position embeddings, pre-norm causal blocks with an injection
point after each, a final norm and a linear head to next-token logits."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from esper.kasmina.layers import Block
from esper.kasmina.protocol import Inject, InjectionPoint
from esper.leyline.registry import HostConfig


TRANSFORMER_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64},  # cheap worlds and tests
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128},  # nanoGPT's CPU configuration
}


class TransformerHostConfig(HostConfig):
    """A GPT-style character transformer host (esper.kasmina.hosts.transformer)."""

    name: Literal["transformer"] = "transformer"
    """Host family."""
    preset: Literal["tiny", "small", "custom"] = "tiny"
    """tiny (2 layers, 2 heads, 64 wide), small (4 layers, 4 heads, 128 wide: nanoGPT's CPU configuration), or
    custom (n_layer, n_head, n_embd as given)."""
    n_layer: int | None = Field(None, ge=1)
    """Transformer blocks (each ends with an injection point); from the preset unless custom."""
    n_head: int | None = Field(None, ge=1)
    """Attention heads per block."""
    n_embd: int | None = Field(None, ge=8)
    """Feature width D (a multiple of n_head)."""
    block_size: int = Field(64, ge=2)
    """Context length T (the text task's windows must not be longer)."""
    vocab_size: int = Field(65, ge=2)
    """Characters in the vocabulary (must equal the task's output size; tiny Shakespeare has 65)."""

    @model_validator(mode="after")
    def _shape(self) -> "TransformerHostConfig":
        given = {k: getattr(self, k) for k in ("n_layer", "n_head", "n_embd")}
        if self.preset == "custom" and None in given.values():
            raise ValueError("host.n_layer, host.n_head and host.n_embd are required when host.preset is 'custom'")
        if self.preset != "custom" and any(v is not None for v in given.values()):
            raise ValueError(f"host.n_layer/n_head/n_embd come from preset {self.preset!r}: set preset: custom to give them")
        self.dims()  # n_embd must split into the heads
        return self

    def dims(self) -> dict[str, int]:
        """n_layer, n_head, n_embd in effect."""
        d = TRANSFORMER_PRESETS[self.preset] if self.preset != "custom" else \
            {"n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd}
        if d["n_embd"] % d["n_head"]:
            raise ValueError(f"host.n_embd ({d['n_embd']}) must be a multiple of host.n_head ({d['n_head']})")
        return d


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
