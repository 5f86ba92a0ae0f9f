"""Kasmina works with any HostProtocol host: two hosts defined here, grown through the whole lifecycle."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.kasmina import Inject, InjectionPoint, MorphogeneticModel
from esper.kasmina.config import KasminaConfig
from esper.leyline import FactoredAction, Op, Stage


class TinyResNet(nn.Module):
    """stem → residual block → [res1] → avg-pool → residual block → [res2] → GAP → linear, on 16×16 images."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.width, self.classes = width, classes
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.res1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.res2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.head = nn.Linear(width, classes)
        self._points = (
            InjectionPoint("res1", width, "conv2d", (16, 16)),
            InjectionPoint("res2", width, "conv2d", (8, 8)),
        )

    def injection_points(self) -> tuple[InjectionPoint, ...]:
        return self._points

    def forward_through(self, x: Tensor, inject: Inject) -> Tensor:
        h = F.relu(self.stem(x))
        h = inject("res1", F.relu(h + self.res1(h)))
        h = F.avg_pool2d(h, 2)
        h = inject("res2", F.relu(h + self.res2(h)))
        return self.head(h.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_through(x, lambda name, h: h)

    def host_spec(self) -> dict[str, Any]:
        return {"name": "tiny_resnet", "width": self.width, "classes": self.classes}


class TinyMLP(nn.Module):
    """Linear → GELU → [hidden1] → Linear → GELU → [hidden2] → Linear, on flat vectors."""

    def __init__(self, d_in: int = 32, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.d_in, self.width, self.classes = d_in, width, classes
        self.fc1, self.fc2, self.head = nn.Linear(d_in, width), nn.Linear(width, width), nn.Linear(width, classes)

    def injection_points(self) -> list[InjectionPoint]:
        return [InjectionPoint("hidden1", self.width, "vector"), InjectionPoint("hidden2", self.width, "vector")]

    def forward_through(self, x: Tensor, inject: Inject) -> Tensor:
        h = inject("hidden1", F.gelu(self.fc1(x)))
        h = inject("hidden2", F.gelu(self.fc2(h)))
        return self.head(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_through(x, lambda name, h: h)

    def host_spec(self) -> dict[str, Any]:
        return {"name": "tiny_mlp", "d_in": self.d_in, "width": self.width, "classes": self.classes}


def _batch(kind: str, n: int = 16):
    gen = torch.Generator().manual_seed(42)
    if kind == "conv":
        return torch.randn(n, 3, 16, 16, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    return torch.randn(n, 32, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _grow_through_lifecycle(model: MorphogeneticModel, slot: str, x: Tensor, y: Tensor, drive, lr: float = 0.05) -> list[float]:
    """SGD on a fixed batch while `slot` goes TRAINING → BLENDING (α to 1) → HOLDING → FOSSILIZED.
    `drive(op)` issues the ADVANCE command. Returns the loss after every step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    s = model.slot(slot)
    seed_params = list(s.seed.parameters())  # the module lives on from graft to fossilization
    for p in seed_params:
        assert any(p is q for q in opt.param_groups[0]["params"])
    losses: list[float] = []

    def sgd(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            out = model(x)
            assert out.shape == (x.shape[0], model.host.classes) and torch.isfinite(out).all()
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            losses.append(loss.item())

    drive(Op.ADVANCE)
    assert s.stage is Stage.TRAINING
    before = [p.detach().clone() for p in seed_params]
    sgd(8)
    assert any(not torch.equal(a, p) for a, p in zip(before, seed_params)), "the seed learned in isolation"
    with torch.no_grad():  # still isolated: the model's output is the host's
        assert torch.equal(model(x), model.host(x))

    drive(Op.ADVANCE)
    assert s.stage is Stage.BLENDING
    alphas = [s.alpha]
    while s.alpha < 1.0:
        sgd(2)
        model.step_epoch()
        alphas.append(s.alpha)
    assert alphas[0] == 0.0 and alphas[-1] == 1.0 and alphas == sorted(alphas) and len(alphas) == s.tempo + 1

    drive(Op.ADVANCE)
    assert s.stage is Stage.HOLDING
    sgd(4)
    model.step_epoch()
    drive(Op.ADVANCE)
    assert s.stage is Stage.FOSSILIZED and s.alpha == 1.0
    assert model.param_counts().fossilized == s.seed_params > 0
    sgd(6)
    return losses


def test_residual_cnn_host_grows_a_seed(tmp_path):
    host = TinyResNet()
    model = MorphogeneticModel(host, KasminaConfig(gate_profile="permissive"))
    assert model.action_spec.slots == ("res1", "res2")
    x, y = _batch("conv")
    with torch.no_grad():
        assert torch.equal(model(x), host(x))
    model.germinate("res2", "conv_light", tempo=3, curve="cosine")
    with torch.no_grad():
        assert torch.equal(model(x), host(x))
    losses = _grow_through_lifecycle(model, "res2", x, y, lambda op: model.advance("res2"))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] * 0.9, losses

    # The other slot stays usable, and the grown model round-trips with a host built by the caller.
    model.germinate("res1", "attention", tempo=3)
    path = tmp_path / "resnet.pt"
    model.save(path)
    loaded = MorphogeneticModel.load(path, TinyResNet())
    assert loaded.manifest() == model.manifest()
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_mlp_host_grows_an_mlp_seed_through_factored_actions():
    host = TinyMLP()
    model = MorphogeneticModel(host, KasminaConfig(blueprints=("mlp",)))
    spec = model.action_spec
    assert spec.slots == ("hidden1", "hidden2") and spec.blueprints == ("mlp",)
    assert spec.blueprint_allowed == ((True,), (True,))
    x, y = _batch("vector")
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(ref, host(x))

    slot_index = spec.slots.index("hidden1")
    model.apply(FactoredAction(Op.GERMINATE, slot_index, 0, spec.blend_index(3, spec.curves[0])))
    s = model.slot("hidden1")
    assert s.stage is Stage.GERMINATED and s.tempo == 3 and s.blueprint == "mlp"
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=1e-6)

    def drive(op: Op) -> None:
        action = FactoredAction(op, slot_index)
        assert model.masks().allows(action), (op, s.stage)
        model.apply(action)

    losses = _grow_through_lifecycle(model, "hidden1", x, y, drive, lr=0.3)
    assert losses[-1] < losses[0] * 0.9, losses


def test_conv_blueprints_are_not_offered_at_vector_points():
    model = MorphogeneticModel(TinyMLP(), KasminaConfig(blueprints=("conv_light", "mlp")))
    assert model.action_spec.blueprint_allowed == ((False, True), (False, True))


class _NoSpec(nn.Module):
    def injection_points(self):
        return [InjectionPoint("a", 4)]

    def forward_through(self, x, inject):
        return inject("a", x)


class _NotAModule:
    def injection_points(self):
        return [InjectionPoint("a", 4)]

    def forward_through(self, x, inject):
        return inject("a", x)

    def host_spec(self):
        return {}


@pytest.mark.parametrize("host", [nn.Linear(3, 3), nn.Sequential(nn.Conv2d(3, 8, 3)), _NoSpec(), _NotAModule()],
                         ids=["linear", "sequential", "no_host_spec", "not_a_module"])
def test_non_host_protocol_modules_are_rejected(host):
    with pytest.raises(TypeError, match="HostProtocol"):
        MorphogeneticModel(host)


class _BadPoints(TinyMLP):
    def __init__(self, names):
        super().__init__()
        self._names = names

    def injection_points(self):
        return [InjectionPoint(n, self.width, "vector") for n in self._names]


@pytest.mark.parametrize("names", [[], ["h", "h"], ["a.b"], [""]], ids=["none", "duplicate", "dotted", "empty"])
def test_badly_declared_injection_points_are_rejected(names):
    with pytest.raises(ValueError):
        MorphogeneticModel(_BadPoints(names))
