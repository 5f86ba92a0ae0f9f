"""Seed blueprints: residual branches that start function-preserving (their output is zero at graft time) — except
`block_copy`, which starts as a copy of the host block before its point (depth stacking)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from esper.kasmina.layers import Block, CausalSelfAttention, FeedForward, zero_output
from esper.kasmina.protocol import InjectionPoint, PointKind


def _groups(channels: int) -> int:
    """GroupNorm groups that divide the channel count (GroupNorm, not BatchNorm: seeds must not
    depend on batch statistics, which differ between isolated training and counterfactual passes)."""
    return math.gcd(channels, 8)


def _zero(layer: nn.Module) -> nn.Module:
    """Zero-initialise a branch's last layer so the seed adds exactly 0 at germination."""
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


class _Norm(nn.Module):
    """γ ⊙ GroupNorm(x) with γ = 0: learns a re-normalised correction of the features."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c), c, affine=False)
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * self.norm(x) + self.beta


class _SqueezeExcite(nn.Module):
    """Channel attention: x ⊙ tanh(MLP(avgpool(x))); the gate's last layer starts at 0."""

    def __init__(self, c: int) -> None:
        super().__init__()
        hidden = max(c // 4, 4)
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = _zero(nn.Linear(hidden, c))

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.tanh(self.fc2(torch.relu(self.fc1(s))))
        return x * gate[:, :, None, None]  # (B, C) → (B, C, 1, 1)


def _depthwise(c: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
        nn.GroupNorm(_groups(c), c),
        nn.ReLU(),
        _zero(nn.Conv2d(c, c, 1)),
    )


def _bottleneck(c: int) -> nn.Module:
    mid = max(c // 4, 4)
    return nn.Sequential(
        nn.Conv2d(c, mid, 1, bias=False),
        nn.GroupNorm(_groups(mid), mid),
        nn.ReLU(),
        nn.Conv2d(mid, mid, 3, padding=1, bias=False),
        nn.GroupNorm(_groups(mid), mid),
        nn.ReLU(),
        _zero(nn.Conv2d(mid, c, 1)),
    )


def _conv_light(c: int) -> nn.Module:
    return nn.Sequential(nn.GroupNorm(_groups(c), c), nn.ReLU(), _zero(nn.Conv2d(c, c, 3, padding=1)))


def _conv_heavy(c: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.GroupNorm(_groups(c), c),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.GroupNorm(_groups(c), c),
        nn.ReLU(),
        _zero(nn.Conv2d(c, c, 3, padding=1)),
    )


def _mlp(d: int) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), _zero(nn.Linear(2 * d, d)))


# ---------------------------------------------------------------------------------------------- token blueprints
# Residual branches over (B, T, D) features of a transformer host; each adds exactly 0 at graft time.
def _heads(d: int) -> int:
    """Heads of a D-wide attention seed: 32-wide heads, at least one."""
    return max(d // 32, 1)


class _PreNorm(nn.Module):
    """f(h) = body(LayerNorm(h)): a branch that reads normalised features, as transformer sublayers do."""

    def __init__(self, d: int, body: nn.Module) -> None:
        super().__init__()
        self.norm, self.body = nn.LayerNorm(d), body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.norm(x))


def _token_mlp(d: int) -> nn.Module:
    body = FeedForward(d)
    zero_output(body.proj)
    return _PreNorm(d, body)


def _attention_head(d: int) -> nn.Module:
    body = CausalSelfAttention(d, n_head=1, head_dim=d // _heads(d))  # one more head of the host's head width
    zero_output(body.proj)
    return _PreNorm(d, body)


def _lora(d: int, rank: int = 8) -> nn.Module:
    down, up = nn.Linear(d, rank, bias=False), nn.Linear(rank, d, bias=False)
    zero_output(up)
    return _PreNorm(d, nn.Sequential(down, up))


class _BlockBranch(nn.Module):
    """A whole transformer block as a seed (depth growth): f(h) = block(h) − h, zero at graft time."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.block = Block(d, _heads(d))
        zero_output(self.block.attn.proj, self.block.mlp.proj)

    def forward(self, x: Tensor) -> Tensor:
        return self.block.residual(x)


def _copy_block(branch: _BlockBranch, template: nn.Module) -> None:
    """`block_copy`: the branch becomes a copy of the host block that feeds its point (depth stacking)."""
    if not isinstance(template, Block):
        raise TypeError(f"block_copy copies a transformer Block, the host offered a {type(template).__name__}")
    branch.block = copy.deepcopy(template)


class _TokenNorm(nn.Module):
    """γ ⊙ LayerNorm(x) + β with γ = β = 0: learns a re-normalised correction of the features."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.gamma, self.beta = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * self.norm(x) + self.beta


@dataclass(frozen=True)
class Blueprint:
    """A recipe for a seed module at an injection point of a given width."""

    name: str
    kind: PointKind
    build_branch: Callable[[int], nn.Module]
    description: str
    init_from_host: Callable[[nn.Module, nn.Module], None] | None = None
    """For a seed initialised from the host (not zero): copies `template` — the host module whose output feeds
    the point (`host.template_at(point)`) — into a freshly built branch. Such a seed changes the model's output
    as soon as α > 0 (under `lifecycle: graft`, at once: stacking), unlike every zero-initialised blueprint."""

    def build(self, channels: int, template: nn.Module | None = None) -> nn.Module:
        """The residual branch f; the slot outputs h + α·f(h). f(h) == 0 at build time, unless the blueprint
        initialises from the host and `template` is given (without one, the branch has its structure, zero output)."""
        branch = self.build_branch(channels)
        if template is not None and self.init_from_host is not None:
            self.init_from_host(branch, template)
        return branch

    def param_count(self, channels: int) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in self.build(channels).parameters())

    def flops(self, point: InjectionPoint) -> int:
        """Forward FLOPs for one sample at `point` (torch's FLOP counter; 1 multiply-add = 2 FLOPs)."""
        with torch.device("meta"):
            branch = self.build(point.channels)
            x = torch.empty(point.feature_shape(1, fallback=1))
            with FlopCounterMode(display=False) as counter:
                branch(x)
        return int(counter.get_total_flops())


BLUEPRINTS: dict[str, Blueprint] = {
    bp.name: bp
    for bp in (
        Blueprint("norm", "conv2d", _Norm, "GroupNorm re-normalisation with a zero-initialised scale"),
        Blueprint("attention", "conv2d", _SqueezeExcite, "squeeze-and-excitation channel attention"),
        Blueprint("depthwise", "conv2d", _depthwise, "depthwise 3×3 + pointwise 1×1 (zero-init)"),
        Blueprint("bottleneck", "conv2d", _bottleneck, "1×1 reduce → 3×3 → 1×1 expand (zero-init)"),
        Blueprint("conv_light", "conv2d", _conv_light, "norm → ReLU → one 3×3 conv (zero-init)"),
        Blueprint("conv_heavy", "conv2d", _conv_heavy, "three 3×3 convs with norms (last zero-init)"),
        Blueprint("mlp", "vector", _mlp, "LayerNorm → Linear(D, 2D) → GELU → Linear(2D, D) (zero-init)"),
        Blueprint("token_mlp", "tokens", _token_mlp, "LayerNorm → Linear(D, 4D) → GELU → Linear(4D, D) (zero-init)"),
        Blueprint("attention_head", "tokens", _attention_head, "one more causal self-attention head (zero-init output)"),
        Blueprint("lora", "tokens", _lora, "LayerNorm → rank-8 down → up (zero-init): a low-rank residual adapter"),
        Blueprint("block", "tokens", _BlockBranch, "a whole pre-norm transformer block (zero-init outputs): depth growth"),
        Blueprint("token_norm", "tokens", _TokenNorm, "LayerNorm re-scaling with a zero-initialised scale"),
        Blueprint("block_copy", "tokens", _BlockBranch, "a copy of the host block before this point: depth "
                  "stacking (not function-preserving)", init_from_host=_copy_block),
    )
}


def get_blueprint(name: str) -> Blueprint:
    try:
        return BLUEPRINTS[name]
    except KeyError:
        raise KeyError(f"unknown blueprint {name!r}; known: {sorted(BLUEPRINTS)}") from None
