"""Blueprints: catalogue, parameter/FLOP accounting, and function preservation at graft time."""

from __future__ import annotations

import pytest
import torch

from _support import CONV_BLUEPRINTS, images, open_gates, tiny_host, tiny_model
from esper.kasmina import BLUEPRINTS, InjectionPoint, MorphogeneticModel, get_blueprint
from esper.kasmina.config import KasminaConfig
from esper.leyline import Stage
from esper.leyline.experiment import ConfigError

TINY_POINTS = tiny_host().injection_points()


def test_catalogue_has_at_least_six_conv_blueprints():
    assert len(CONV_BLUEPRINTS) >= 6
    for name, bp in BLUEPRINTS.items():
        assert bp.name == name and bp.kind in ("conv2d", "vector", "tokens") and bp.description


def test_unknown_blueprint_is_a_key_error_naming_it():
    with pytest.raises(KeyError, match="no_such_blueprint"):
        get_blueprint("no_such_blueprint")


@pytest.mark.parametrize("name", sorted(BLUEPRINTS))
@pytest.mark.parametrize("channels", [4, 8, 12, 32])
def test_param_count_matches_the_built_module(name, channels):
    bp = get_blueprint(name)
    module = bp.build(channels)
    assert bp.param_count(channels) == sum(p.numel() for p in module.parameters())
    assert bp.param_count(channels) > 0


@pytest.mark.parametrize("name", sorted(BLUEPRINTS))
def test_param_count_grows_with_width(name):
    bp = get_blueprint(name)
    assert bp.param_count(8) < bp.param_count(16) < bp.param_count(32)


@pytest.mark.parametrize("name", sorted(BLUEPRINTS))
def test_flops_are_positive_except_norm(name):
    bp = get_blueprint(name)
    point = InjectionPoint("p", 16, bp.kind, (8, 8) if bp.kind == "conv2d" else None, 8 if bp.kind == "tokens" else None)
    bigger = InjectionPoint("p", 32, bp.kind, point.spatial, point.tokens)
    flops = bp.flops(point)
    assert isinstance(flops, int) and flops >= 0
    if name in ("norm", "token_norm"):
        # torch.utils.flop_counter.FlopCounterMode only counts matmul/conv-family ops (mm, addmm, bmm,
        # convolution, attention …); the norms are a normalisation + an elementwise scale/shift, so they count 0.
        assert flops == 0
        return
    assert flops > 0
    assert bp.flops(bigger) > flops  # a wider point costs more


def test_conv_flops_match_a_hand_count():
    # conv_light at C channels on H×W: one 3×3 C→C conv = 2·C·C·9·H·W FLOPs (GroupNorm/ReLU/bias not counted).
    c, hw = 8, (4, 4)
    assert get_blueprint("conv_light").flops(InjectionPoint("p", c, "conv2d", hw)) == 2 * c * c * 9 * hw[0] * hw[1]


@pytest.mark.parametrize("name", sorted(BLUEPRINTS))
def test_fresh_branch_outputs_exactly_zero(name):
    bp = get_blueprint(name)
    x = torch.randn(InjectionPoint("p", 8, bp.kind, (5, 5), 6).feature_shape(3))
    y = bp.build(8)(x)
    assert y.shape == x.shape
    assert torch.count_nonzero(y) == 0


@pytest.mark.parametrize("name", CONV_BLUEPRINTS)
def test_germination_preserves_the_function(name):
    """Every conv blueprint, in every slot of the tiny CNN: the output is unchanged at graft time, through
    TRAINING, at BLENDING with α = 0, and even with α forced to 1 (the branch is zero-initialised)."""
    model = tiny_model(open_gates())
    model.eval()
    x = images(4)
    with torch.no_grad():
        before = model(x)
        assert torch.equal(before, model.host(x))
        for point in TINY_POINTS:
            model.germinate(point.name, name, tempo=3, curve="linear")
            assert model.slot(point.name).stage is Stage.GERMINATED
            assert torch.allclose(model(x), before, atol=1e-6)
        for point in TINY_POINTS:
            model.advance(point.name)  # TRAINING
            assert torch.allclose(model(x), before, atol=1e-6)
        for point in TINY_POINTS:
            model.advance(point.name)  # BLENDING, α = 0
            assert model.slot(point.name).stage is Stage.BLENDING and model.slot(point.name).alpha == 0.0
        assert torch.allclose(model(x), before, atol=1e-6)
        assert torch.allclose(model(x), model.host(x), atol=1e-6)
        for point in TINY_POINTS:
            model.slot(point.name).alpha_override = 1.0
        assert torch.allclose(model(x), before, atol=1e-6)


@pytest.mark.parametrize("name", CONV_BLUEPRINTS)
def test_blending_at_alpha_zero_is_the_host_even_after_the_seed_learned(name):
    """At α = 0 the slot is the identity however non-trivial the seed's weights are."""
    model = tiny_model(open_gates())
    model.eval()
    x = images(4)
    model.germinate("block2", name, tempo=4, curve="cosine")
    model.advance("block2")
    model.advance("block2")
    slot = model.slot("block2")
    with torch.no_grad():
        for p in slot.seed.parameters():
            p.add_(0.5 * torch.randn_like(p))
        assert slot.alpha == 0.0
        assert torch.equal(model(x), model.host(x))
        slot.step_epoch()
        assert 0.0 < slot.alpha < 1.0
        assert not torch.allclose(model(x), model.host(x), atol=1e-6), "a mid-ramp trained seed must show"


def test_vector_blueprint_is_refused_at_a_conv_point():
    model = MorphogeneticModel(tiny_host(), KasminaConfig(blueprints=("norm", "mlp")))
    assert model.action_spec.blueprint_allowed == ((True, False),) * 3
    from esper.kasmina import IllegalCommandError

    before = model.manifest()
    with pytest.raises(IllegalCommandError, match="block1"):
        model.germinate("block1", "mlp")
    assert model.manifest() == before


def test_default_blueprints_are_every_registered_one_that_fits_the_host():
    model = MorphogeneticModel(tiny_host(), KasminaConfig())
    assert KasminaConfig().blueprints is None
    assert model.config.blueprints == CONV_BLUEPRINTS  # registry order; "mlp" fits no conv2d point
    assert model.action_spec.blueprints == CONV_BLUEPRINTS


def test_blueprints_that_fit_no_point_are_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"kasmina\.blueprints.*mlp"):
        MorphogeneticModel(tiny_host(), KasminaConfig(blueprints=("mlp",)))
