"""Isolation: a TRAINING seed learns from the host's error without touching the host's output or gradients;
a BLENDING/HOLDING seed adds α·f(h) but does not send gradient into the host; a FOSSILIZED one does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _support import CONV_BLUEPRINTS, advance_to, images, labels, open_gates, perturb, tiny_model
from esper.leyline import Stage

SLOTS = ("block1", "block2", "block3")


def _training_model(blueprint: str):
    model = tiny_model(open_gates())
    for s in SLOTS:
        model.germinate(s, blueprint, tempo=4, curve="linear")
        advance_to(model, s, Stage.TRAINING)
    return model


def _last_layer_params(model) -> dict[str, torch.nn.Parameter]:
    """Each seed's last (zero-initialised) layer: the last module, in registration order, owning parameters."""
    out = {}
    for s in SLOTS:
        owners = [(n, m) for n, m in model.slot(s).seed.named_modules() if list(m.parameters(recurse=False))]
        name, last = owners[-1]
        for pn, p in last.named_parameters(recurse=False):
            assert torch.count_nonzero(p) == 0, f"{s}.{name}.{pn} should be zero-initialised"
            out[f"{s}.{name}.{pn}"] = p
    return out


def _host_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.host.named_parameters()}


@pytest.mark.parametrize("blueprint", CONV_BLUEPRINTS)
def test_training_output_is_bitwise_the_host_and_last_layer_learns(blueprint):
    model = _training_model(blueprint)
    model.train()
    x, y = images(8), labels(8)
    zero_init = _last_layer_params(model)
    assert zero_init, "every blueprint has a zero-initialised last layer"

    out = model(x)
    assert torch.equal(out, model.host(x))
    F.cross_entropy(out, y).backward()
    for name, p in zero_init.items():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, f"{name} got no gradient from the host's error"
        assert torch.isfinite(p.grad).all(), name
    for s in SLOTS:
        norm = model.slot(s).seed_grad_norm()
        assert norm is not None and norm > 0


@pytest.mark.parametrize("blueprint", ["conv_light", "bottleneck", "attention", "norm"])
def test_training_seeds_do_not_change_host_gradients(blueprint):
    """With non-trivial seed weights (f ≠ 0), the host's gradients equal those of a host-only backward."""
    model = _training_model(blueprint)
    for s in SLOTS:
        perturb(model.slot(s).seed, scale=0.3, seed=7)
    model.train()
    x, y = images(8, seed=3), labels(8, seed=3)

    out = model(x)
    F.cross_entropy(out, y).backward()
    with_seeds = _host_grads(model)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.slot("block1").seed.parameters())

    model.zero_grad(set_to_none=True)
    host_out = model.host(x)
    assert torch.equal(out.detach(), host_out.detach())
    F.cross_entropy(host_out, y).backward()
    host_only = _host_grads(model)
    assert with_seeds.keys() == host_only.keys()
    for n in with_seeds:
        assert torch.equal(with_seeds[n], host_only[n]), n
    for s in SLOTS:  # a host-only pass does not touch the seeds
        assert all(p.grad is None for p in model.slot(s).seed.parameters())


def test_training_isolation_in_eval_mode_too():
    model = _training_model("depthwise")
    for s in SLOTS:
        perturb(model.slot(s).seed, scale=0.5)
    model.eval()
    x = images(4)
    with torch.no_grad():
        assert torch.equal(model(x), model.host(x))


def _slot_in(stage: Stage, blueprint: str = "conv_light", tempo: int = 4, ticks: int = 1):
    """block2 of a tiny model driven to `stage`, with perturbed (non-trivial) seed weights."""
    model = tiny_model(open_gates())
    model.germinate("block2", blueprint, tempo=tempo, curve="linear")
    slot = model.slot("block2")
    if stage is Stage.BLENDING:
        advance_to(model, "block2", Stage.BLENDING)
        for _ in range(ticks):
            slot.step_epoch()
    else:
        advance_to(model, "block2", stage)
    perturb(slot.seed, scale=0.3, seed=11)
    return model, slot


@pytest.mark.parametrize("blueprint", CONV_BLUEPRINTS)
@pytest.mark.parametrize("ticks", [1, 2, 3])
def test_blending_output_is_lerp_of_host_and_host_plus_seed(blueprint, ticks):
    model, slot = _slot_in(Stage.BLENDING, blueprint, tempo=4, ticks=ticks)
    alpha = slot.alpha
    assert alpha == pytest.approx(ticks / 4) and 0.0 < alpha < 1.0
    h = torch.randn(2, slot.point.channels, *slot.point.spatial)
    with torch.no_grad():
        f = slot.seed(h)
        assert f.abs().max() > 1e-3, "the perturbed seed computes something"
        out = slot(h)
    torch.testing.assert_close(out, h + alpha * f, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out, torch.lerp(h, h + f, alpha), atol=1e-5, rtol=1e-5)


def test_holding_and_fossilized_output_is_host_plus_seed():
    for stage in (Stage.HOLDING, Stage.FOSSILIZED):
        model, slot = _slot_in(stage)
        assert slot.alpha == 1.0
        h = torch.randn(2, slot.point.channels, *slot.point.spatial)
        with torch.no_grad():
            torch.testing.assert_close(slot(h), h + slot.seed(h), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("stage", [Stage.TRAINING, Stage.BLENDING, Stage.HOLDING])
def test_seed_input_is_detached_before_fossilization(stage):
    model, slot = _slot_in(stage, ticks=2)
    h = torch.randn(2, slot.point.channels, *slot.point.spatial, requires_grad=True)
    g = torch.randn_like(h)
    torch.autograd.backward(slot(h), g)
    # d out / d h is exactly the identity: the seed branch sends nothing into the host.
    assert torch.equal(h.grad, g)
    # The seed itself does learn.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in slot.seed.parameters())


def test_fossilized_seed_sends_gradient_into_the_host():
    model, slot = _slot_in(Stage.FOSSILIZED)
    h = torch.randn(2, slot.point.channels, *slot.point.spatial, requires_grad=True)
    g = torch.randn_like(h)
    torch.autograd.backward(slot(h), g)
    assert not torch.allclose(h.grad, g, atol=1e-6), "FOSSILIZED: the seed branch is part of the host's graph"


def test_model_level_host_gradients_differ_only_when_fossilized():
    """Through the whole model: BLENDING/HOLDING seeds change host gradients only via their forward
    contribution; with α forced to 0 the host gradients are the host-only ones again."""
    x, y = images(8, seed=5), labels(8, seed=5)
    for stage in (Stage.BLENDING, Stage.HOLDING):
        model, slot = _slot_in(stage, ticks=2)
        model.train()
        slot.alpha_override = 0.0
        F.cross_entropy(model(x), y).backward()
        forced = _host_grads(model)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model.host(x), y).backward()
        for n, g in _host_grads(model).items():
            assert torch.equal(forced[n], g), (stage, n)
