"""Per-domain adapters on a frozen Tamiyo core: "the core learns physics; adapters learn dialects".

An adapter never touches the core's weights. It holds, for every linear layer of the core, a low-rank weight
delta B·A (LoRA; B starts at zero) and a bias delta, and for the layers that read the domain's raw features (the
global features, a slot's own features) an input projection P: the layer sees (I + P)·x, i.e. its weight columns
become W·(I + P). All of it is merged into the core's weights at call time (`merged`), and the core runs
functionally on the merged weights (`torch.func.functional_call`), so a fresh adapter decides exactly as the bare
core, and detaching one leaves the core bit-for-bit what it was.

An adapter names its core by `core_hash`; attaching it to any other core is an `AdapterError`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper.leyline.features import GLOBAL_FEATURES
from esper.tamiyo.core import SLOT_INPUT, TamiyoCore, core_hash

INPUT_PROJECTIONS = {"global_enc.0": len(GLOBAL_FEATURES), "slot_enc.0": SLOT_INPUT}
"""The core layers that read the domain's features, and how many leading input columns are those features."""


class AdapterError(ValueError):
    """An adapter that does not fit the core it is attached to (another core, another shape)."""


class _LayerDelta(nn.Module):
    """One linear layer's delta: B (out, r) · A (r, in), a bias delta, and optionally an input projection."""

    def __init__(self, n_out: int, n_in: int, rank: int, n_projected: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, n_in) * n_in ** -0.5)
        self.b = nn.Parameter(torch.zeros(n_out, rank))
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.projection = nn.Parameter(torch.zeros(n_projected, n_projected)) if n_projected else None

    def weight(self, w: Tensor) -> Tensor:
        out = w + self.b @ self.a  # (out, r) @ (r, in) → (out, in)
        if self.projection is not None:
            k = self.projection.shape[0]
            # W·(I + P) on the first k columns: the layer reads the domain's features through (I + P)
            out = torch.cat([out[:, :k] + w[:, :k] @ self.projection, out[:, k:]], 1)
        return out


class TamiyoAdapter(nn.Module):
    """A domain's adapter for one core (sized from it): `merged(core)` gives the weights the core runs on."""

    def __init__(self, core: TamiyoCore, domain: str, rank: int = 2) -> None:
        super().__init__()
        if rank < 1:
            raise AdapterError(f"adapter rank must be ≥ 1 (got {rank})")
        self.domain, self.rank, self.core_hash, self.hidden = domain, rank, core_hash(core), core.hidden
        self.layers = [name for name, m in core.named_modules() if isinstance(m, nn.Linear)]
        self.deltas = nn.ModuleDict({
            _key(name): _LayerDelta(m.out_features, m.in_features, rank, INPUT_PROJECTIONS.get(name, 0))
            for name, m in core.named_modules() if isinstance(m, nn.Linear)
        })

    def merged(self, core: TamiyoCore) -> dict[str, Tensor]:
        """{parameter name: core weight + this adapter's delta} for every linear layer of `core`."""
        modules = dict(core.named_modules())
        out = {}
        for name in self.layers:
            layer, delta = modules[name], self.deltas[_key(name)]
            out[f"{name}.weight"] = delta.weight(layer.weight)
            out[f"{name}.bias"] = layer.bias + delta.bias
        return out

    def describe(self) -> dict:
        return {"domain": self.domain, "rank": self.rank, "core_hash": self.core_hash, "hidden": self.hidden}


def _key(layer: str) -> str:
    return layer.replace(".", "-")  # ModuleDict keys may not contain '.'


def check_fits(adapter: TamiyoAdapter, core: TamiyoCore) -> None:
    """AdapterError unless `adapter` was made for exactly this core (by the hash of its weights)."""
    have = core_hash(core)
    if adapter.core_hash != have:
        raise AdapterError(f"adapter {adapter.domain!r} was trained on core {adapter.core_hash[:12]}…, "
                           f"this core is {have[:12]}…: load the core it names")


def trainable_share(adapter: TamiyoAdapter, core: TamiyoCore) -> float:
    """The adapter's parameters as a fraction of the core's."""
    return sum(p.numel() for p in adapter.parameters()) / sum(p.numel() for p in core.parameters())
