"""esper.wrap: unmodified torch models (torchvision's resnet18, a user-written transformer) grow at named submodules."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18

import esper
from esper.kasmina import BLUEPRINTS, IllegalCommandError, MorphogeneticModel, load_wrapped
from esper.kasmina.layers import Block
from esper.kasmina.config import KasminaConfig
from esper.leyline import Stage
from esper.leyline.experiment import ConfigError

VOCAB, WIDTH, CONTEXT = 11, 32, 8


class UserBlock(nn.Module):
    """A pre-norm block written with torch's own MultiheadAttention (not esper's layers)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), nn.MultiheadAttention(d, 2, batch_first=True)
        self.ln2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: Tensor) -> Tensor:
        a = self.ln1(x)
        x = x + self.attn(a, a, a, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class UserTransformer(nn.Module):
    """(B, T) token ids → (B, T, vocab) logits; blocks in an nn.ModuleList; `unused` is built but never called."""

    def __init__(self, block: type[nn.Module] = UserBlock) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(0.02 * torch.randn(CONTEXT, WIDTH))
        self.blocks = nn.ModuleList(block(WIDTH, 2) if block is Block else block(WIDTH) for _ in range(2))
        self.ln, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB)
        self.unused = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        h = self.tok(x) + self.pos[: x.shape[1]]  # (B, T) → (B, T, D)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))


def _inputs(case: str, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if case == "resnet18":
        return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    return torch.randint(0, VOCAB, (n, CONTEXT), generator=gen), torch.randint(0, VOCAB, (n, CONTEXT), generator=gen)


CASES = {
    "resnet18": (lambda: resnet18(num_classes=10), ["layer2", "layer3"], ["layer2", "layer3"]),
    "transformer": (UserTransformer, ["blocks.0", "blocks.1"], ["blocks_0", "blocks_1"]),
}


def _loss(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out.flatten(0, -2), y.flatten())  # (B, [T,] K) → (N, K)


def _zero_init_blueprints(kind: str) -> list[str]:
    return [n for n, bp in BLUEPRINTS.items() if bp.kind == kind and bp.init_from_host is None]


@pytest.mark.parametrize("case", CASES)
def test_points_are_read_from_one_probe_and_training_modes_restored(case):
    build, points, slots = CASES[case]
    net = build().train()
    net.get_submodule("blocks.0" if case == "transformer" else "layer1").eval()  # a module the user froze stays frozen
    frozen = {n for n, m in net.named_modules() if not m.training}
    model = esper.wrap(net, points=points, example_input=_inputs(case, 2)[0])
    assert {n for n, m in net.named_modules() if not m.training} == frozen
    assert model.action_spec.slots == tuple(slots)
    assert model.host.point_names == dict(zip(slots, points))
    shapes = [(p.kind, p.channels, p.spatial, p.tokens) for p in model.host.injection_points()]
    if case == "resnet18":  # 32×32 input: stem and max-pool /4, layer2 and layer3 /2 each
        assert shapes == [("conv2d", 128, (4, 4), None), ("conv2d", 256, (2, 2), None)]
    else:
        assert shapes == [("tokens", WIDTH, None, CONTEXT)] * 2


@pytest.mark.parametrize("case", CASES)
def test_grafting_every_fitting_blueprint_preserves_the_function(case):
    build, points, slots = CASES[case]
    net = build()
    bare = copy.deepcopy(net).eval()  # no hooks: the reference the wrapped model must match
    x = _inputs(case, 2)[0]
    model = esper.wrap(net, points, KasminaConfig(lifecycle="graft"), example_input=x).eval()
    empty = model.snapshot()
    kind = model.host.injection_points()[0].kind
    blueprints = _zero_init_blueprints(kind)
    assert len(blueprints) >= 5 and set(blueprints) <= set(model.config.blueprints)
    with torch.no_grad():
        ref = bare(x)
        for name in blueprints:
            model.restore(empty)
            for slot in slots:
                model.germinate(slot, name)
                assert model.slot(slot).stage is Stage.FOSSILIZED  # the seed runs in the graph: h + f(h)
            assert (model(x) - ref).abs().max() <= 1e-6, name
        # The seeds really sit in the forward pass: moving one seed's weights moves the output.
        for p in model.slot(slots[0]).seed.parameters():
            p.add_(0.1)
        assert (model(x) - ref).abs().max() > 1e-3


def _sgd(model: MorphogeneticModel, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, steps: int) -> None:
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = _loss(model(x), y)
        penalty = model.pop_isolation_loss()  # TRAINING seeds' restoring force (see SeedSlot.forward)
        (loss if penalty is None else loss + penalty).backward()
        opt.step()


@pytest.mark.parametrize("case", CASES)
def test_full_lifecycle_then_save_and_load_into_a_fresh_model(case, tmp_path):
    build, points, slots = CASES[case]
    x, y = _inputs(case, 4)
    model = esper.wrap(build(), points, KasminaConfig(gate_profile="permissive"), example_input=x[:2])
    kind = model.host.injection_points()[0].kind
    for slot, blueprint in zip(slots, _zero_init_blueprints(kind)):
        model.germinate(slot, blueprint, tempo=2)
        assert model.advance(slot) is Stage.TRAINING
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # after germination: the seeds' parameters are included
    seeds = {s: [p.detach().clone() for p in model.slot(s).seed.parameters()] for s in slots}
    _sgd(model, opt, x, y, 3)
    for s in slots:
        now = list(model.slot(s).seed.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(seeds[s], now)), f"seed at {s} did not learn"
    with torch.no_grad():  # isolated: the output is still the bare model's
        assert torch.equal(model(x), model.host(x))

    for s in slots:
        assert model.advance(s) is Stage.BLENDING
    while model.slot(slots[0]).alpha < 1.0:
        _sgd(model, opt, x, y, 1)
        model.step_epoch()
    for s in slots:
        assert model.advance(s) is Stage.HOLDING
    _sgd(model, opt, x, y, 1)
    for s in slots:
        assert model.advance(s) is Stage.FOSSILIZED
    _sgd(model, opt, x, y, 1)
    model.eval()
    with torch.no_grad():
        grown = model(x)
        assert not torch.allclose(grown, model.host(x), atol=1e-4)  # the fossilized seeds change the function

    path = tmp_path / "grown.pt"
    model.save(path)
    torch.manual_seed(123)  # a fresh model with other initial weights: everything must come from the file
    loaded = load_wrapped(path, build(), points, example_input=x[:2]).eval()
    assert loaded.manifest() == model.manifest()
    assert [loaded.slot(s).stage for s in slots] == [Stage.FOSSILIZED] * 2
    with torch.no_grad():
        assert torch.equal(loaded(x), grown)


def test_load_refuses_other_points_with_one_line(tmp_path):
    x = _inputs("transformer", 2)[0]
    esper.wrap(UserTransformer(), ["blocks.0", "blocks.1"], example_input=x).save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"points \{'blocks_0': 'blocks.0'\}") as exc:
        load_wrapped(tmp_path / "m.pt", UserTransformer(), ["blocks.0"], example_input=x)
    assert "\n" not in str(exc.value)


def test_deepcopy_rebinds_hooks_to_the_copy():
    x = _inputs("transformer", 2)[0]
    model = esper.wrap(UserTransformer(), ["blocks.1"], KasminaConfig(lifecycle="graft"), example_input=x).eval()
    model.germinate("blocks_1", "token_mlp")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        before = model(x)
        for p in twin.slot("blocks_1").seed.parameters():
            p.add_(0.1)
        assert not torch.allclose(twin(x), before)  # the copy's hook reaches the copy's slot…
        assert torch.equal(model(x), before)  # …and not the original's


def test_block_copy_stacks_an_esper_block_and_refuses_a_foreign_one():
    x = _inputs("transformer", 2)[0]
    net = UserTransformer(block=Block).eval()
    model = esper.wrap(net, ["blocks.0"], KasminaConfig(lifecycle="graft"), example_input=x).eval()
    model.germinate("blocks_0", "block_copy")
    copied = model.slot("blocks_0").seed.block
    assert all(h.host is None for h in copied._forward_hooks.values())  # the copy's hook is detached, not re-entrant
    with torch.no_grad():  # the copy runs after the block it copies: blocks.0 twice, then blocks.1
        h = net.tok(x) + net.pos[: x.shape[1]]
        stacked = net.head(net.ln(net.blocks[1](net.blocks[0](net.blocks[0](h)))))
        assert torch.allclose(model(x), stacked, atol=1e-6)
    foreign = esper.wrap(UserTransformer(), ["blocks.0"], KasminaConfig(lifecycle="graft"), example_input=x)
    with pytest.raises(IllegalCommandError, match="UserBlock"):
        foreign.germinate("blocks_0", "block_copy")


def _clashing_names() -> nn.Module:
    return nn.Sequential(OrderedDict([("a", nn.Sequential(nn.Linear(4, 4))), ("a_0", nn.Linear(4, 4))]))


def _shared_layer() -> nn.Module:
    layer = nn.Linear(4, 4)
    return nn.Sequential(layer, nn.ReLU(), layer)  # one module under the names "0" and "2", called twice


def _tokens() -> Tensor:
    return _inputs("transformer", 2)[0]


ERRORS = {  # case: (model, points, kasmina, example input, error, what the message must name)
    "not_a_submodule": (CASES["resnet18"][0], ["layer5"], None, lambda: _inputs("resnet18", 2)[0], ValueError,
                        ["'layer5'", "layer4"]),
    "not_a_tensor": (UserTransformer, ["blocks.0.attn"], None, _tokens, ValueError, ["'blocks.0.attn'", "tuple"]),
    "never_reached": (UserTransformer, ["blocks.1", "unused"], None, _tokens, ValueError, ["'unused'", "never reached"]),
    "reached_twice": (_shared_layer, ["0"], None, lambda: torch.randn(2, 4), ValueError, ["'0'", "more than once"]),
    "unknown_rank": (lambda: nn.Sequential(nn.Conv3d(1, 2, 1)), ["0"], None, lambda: torch.randn(2, 1, 2, 2, 2),
                     ValueError, ["'0'", "[2, 2, 2, 2, 2]"]),
    "duplicate": (UserTransformer, ["blocks.0", "blocks.0"], None, _tokens, ValueError, ["duplicate", "'blocks.0'"]),
    "duplicate_slot_name": (_clashing_names, ["a.0", "a_0"], None, lambda: torch.randn(2, 4), ValueError,
                            ["'a.0'", "'a_0'"]),
    "points_as_string": (UserTransformer, "blocks.0", None, _tokens, ValueError, ["'blocks.0'", "list"]),
    "blueprint_fits_no_point": (UserTransformer, ["blocks.0"], KasminaConfig(blueprints=("lora", "conv_light")),
                                _tokens, ConfigError, ["'conv_light'", "['tokens']"]),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_one_line_and_name_the_offender(case):
    build, points, kasmina, example, error, names = ERRORS[case]
    net = build()
    with pytest.raises(error) as exc:
        esper.wrap(net, points, kasmina, example_input=example())
    message = str(exc.value)
    assert "\n" not in message and all(n in message for n in names), message
    assert not any(m._forward_hooks for m in net.modules())  # a failed wrap leaves the model as it was


def test_a_model_is_wrapped_once():
    x = _inputs("transformer", 2)[0]
    net = UserTransformer()
    esper.wrap(net, ["blocks.0"], example_input=x)
    with pytest.raises(ValueError, match="'blocks.0' is already wrapped"):
        esper.wrap(net, ["blocks.1", "blocks.0"], example_input=x)
    assert sum(len(m._forward_hooks) for m in net.modules()) == 1  # the refused wrap added nothing
