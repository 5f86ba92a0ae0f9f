"""Fused counterfactual evaluation equals separate passes with each slot's α forced to 0."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from _support import advance_to, image_task, images, open_gates, perturb, tiny_model
from esper.leyline import Stage
from esper.tolaria.counterfactual import contributing_slots, evaluate_with_counterfactuals, fused_outputs
from esper.tolaria.data import DeviceLoader, load_synthetic
from esper.tolaria.datasets import channel_stats

SLOTS = ("block1", "block2", "block3")
TASK = image_task(load_synthetic(40, seed=3), load_synthetic(20, seed=4))  # its loss and metric; data unused


def _blend_mid_ramp(model, slot: str, blueprint: str = "conv_light", tempo: int = 4, steps: int = 2) -> None:
    model.germinate(slot, blueprint, tempo=tempo, curve="linear")
    advance_to(model, slot, Stage.BLENDING)
    for _ in range(steps):
        model.slot(slot).step_epoch()
    assert 0.0 < model.slot(slot).alpha < 1.0


def _perturb_host(model, seed: int = 99) -> None:
    """Give the host's BatchNorms non-trivial running statistics, as after some training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.host.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def _mixed_model(stages: dict[str, Stage | None], blueprints: dict[str, str] | None = None):
    """A tiny model whose slots are in the given stages (None = DORMANT); seed weights perturbed off zero."""
    torch.manual_seed(0)
    model = tiny_model(open_gates())
    blueprints = blueprints or {}
    for i, (slot, stage) in enumerate(stages.items()):
        if stage is None:
            continue
        bp = blueprints.get(slot, "conv_light")
        if stage is Stage.BLENDING:
            _blend_mid_ramp(model, slot, bp)
        else:
            model.germinate(slot, bp, tempo=2, curve="linear")
            advance_to(model, slot, stage)
        perturb(model.slot(slot).seed, scale=0.3, seed=10 + i)
    _perturb_host(model)
    model.eval()
    return model


def _separate_logits(model, x, slot: str | None) -> torch.Tensor:
    """Logits of a plain forward with `slot`'s α forced to 0 (None: as-is)."""
    s = None if slot is None else model.slot(slot)
    try:
        if s is not None:
            s.alpha_override = 0.0
        with torch.no_grad():
            return model(x)
    finally:
        if s is not None:
            s.alpha_override = None


MIXES = {
    "blend-hold-fossil": {"block1": Stage.BLENDING, "block2": Stage.HOLDING, "block3": Stage.FOSSILIZED},
    "fossil-blend-hold": {"block1": Stage.FOSSILIZED, "block2": Stage.BLENDING, "block3": Stage.HOLDING},
    "dormant-training-hold": {"block1": None, "block2": Stage.TRAINING, "block3": Stage.HOLDING},
    "blend-dormant-fossil": {"block1": Stage.BLENDING, "block2": None, "block3": Stage.FOSSILIZED},
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_fused_outputs_equal_separate_passes(mix):
    model = _mixed_model(MIXES[mix])
    slots = contributing_slots(model)
    expected_slots = [s for s, st in MIXES[mix].items() if st in (Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED)]
    assert slots == expected_slots, "contributing slots, in execution order"
    x = images(6, seed=3)
    fused = fused_outputs(model, x, slots)
    assert fused.shape == (1 + len(slots), 6, 10)
    assert torch.allclose(fused[0], _separate_logits(model, x, None), atol=1e-5)
    for i, name in enumerate(slots):
        off = _separate_logits(model, x, name)
        assert torch.allclose(fused[1 + i], off, atol=1e-5), f"configuration without {name}"
        # the slot really matters: removing it changes the logits (seed weights are non-zero)
        assert not torch.allclose(fused[1 + i], fused[0], atol=1e-4), f"{name} contributes nothing"
    for name in SLOTS:
        assert model.slot(name).alpha_override is None


def test_fused_outputs_without_slots_is_the_plain_forward():
    model = _mixed_model(MIXES["blend-hold-fossil"])
    x = images(4, seed=1)
    fused = fused_outputs(model, x, [])
    assert fused.shape == (1, 4, 10)
    assert torch.allclose(fused[0], _separate_logits(model, x, None), atol=1e-6)


def test_fused_outputs_with_attention_and_norm_seeds():
    """Per-sample seeds of other blueprints (channel attention, GroupNorm scale) fork the batch correctly too."""
    stages = {"block1": Stage.HOLDING, "block2": Stage.BLENDING, "block3": Stage.FOSSILIZED}
    model = _mixed_model(stages, {"block1": "attention", "block2": "norm", "block3": "bottleneck"})
    x = images(5, seed=4)
    slots = contributing_slots(model)
    fused = fused_outputs(model, x, slots)
    for i, name in enumerate(slots):
        assert torch.allclose(fused[1 + i], _separate_logits(model, x, name), atol=1e-5)


def _val_batches(n: int = 200, batch: int = 64):
    data = load_synthetic(n, seed=5)
    mean, std = channel_stats(data)
    return DeviceLoader(data, batch, mean, std, augment=False, shuffle=False, seed=0)


def _separate_accuracy(model, loader, slot: str | None) -> tuple[float, float]:
    correct, loss, n = 0, 0.0, 0
    for x, y in loader:
        logits = _separate_logits(model, x, slot)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
    return loss / n, correct / n


@pytest.mark.parametrize("mix", list(MIXES))
def test_contributions_equal_accuracy_differences_of_separate_passes(mix):
    model = _mixed_model(MIXES[mix])
    loader = _val_batches()
    loss, acc, contrib, _ = evaluate_with_counterfactuals(model, TASK, loader)
    ref_loss, ref_acc = _separate_accuracy(model, loader, None)
    assert acc == pytest.approx(ref_acc, abs=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert set(contrib) == set(SLOTS), "every slot gets a value"
    for name, stage in MIXES[mix].items():
        if stage in (None, Stage.TRAINING):
            assert contrib[name] == 0.0, f"{name} ({stage}) cannot change the output"
            continue
        _, acc_off = _separate_accuracy(model, loader, name)
        assert contrib[name] == pytest.approx(ref_acc - acc_off, abs=1e-6), name


def test_contributions_are_not_all_zero_for_strong_seeds():
    """Guards the equality test against a vacuous pass: big seed perturbations move accuracy."""
    model = _mixed_model(MIXES["blend-hold-fossil"])
    for name in SLOTS:
        perturb(model.slot(name).seed, scale=2.0, seed=50)
    _, _, contrib, _ = evaluate_with_counterfactuals(model, TASK, _val_batches())
    assert any(abs(v) > 0 for v in contrib.values())


def test_dormant_and_training_slots_get_exactly_zero():
    model = _mixed_model({"block1": None, "block2": Stage.TRAINING, "block3": None})
    # A TRAINING seed computes f but its value never reaches the output.
    assert contributing_slots(model) == []
    _, _, contrib, _ = evaluate_with_counterfactuals(model, TASK, _val_batches(100))
    assert contrib == {"block1": 0.0, "block2": 0.0, "block3": 0.0}


def test_blending_at_alpha_zero_and_germinated_get_zero():
    torch.manual_seed(0)
    model = tiny_model(open_gates())
    model.germinate("block1", "conv_light", tempo=3, curve="linear")
    advance_to(model, "block1", Stage.BLENDING)  # α = 0 right after entering BLENDING
    model.germinate("block2", "conv_light", tempo=3, curve="linear")  # GERMINATED
    for name in ("block1", "block2"):
        perturb(model.slot(name).seed, scale=0.5)
    assert model.slot("block1").alpha == 0.0
    assert contributing_slots(model) == []
    _, _, contrib, _ = evaluate_with_counterfactuals(model, TASK, _val_batches(100))
    assert contrib["block1"] == 0.0 and contrib["block2"] == 0.0


def test_as_is_loss_and_metric_equal_the_plain_evaluation():
    """The fused pass's as-is branch is the model itself: the same loss and metric as evaluating without
    counterfactuals (which measures no contribution)."""
    model = _mixed_model(MIXES["blend-hold-fossil"])
    loader = _val_batches(300)
    loss, acc, contrib, _ = evaluate_with_counterfactuals(model, TASK, loader)
    plain_loss, plain_acc, none, _ = evaluate_with_counterfactuals(model, TASK, loader, counterfactuals=False)
    assert acc == pytest.approx(plain_acc, abs=1e-6) and loss == pytest.approx(plain_loss, rel=1e-5)
    assert any(contrib.values()) and not any(none.values())


def test_a_training_seed_does_not_run_outside_training():
    """In eval mode (or without gradients) a TRAINING slot's output is h alone: its seed's forward is skipped."""
    model = _mixed_model({"block1": None, "block2": Stage.TRAINING, "block3": None})
    calls = []
    model.slot("block2").seed.register_forward_hook(lambda *_: calls.append(1))
    x = images(4, seed=1)
    model.eval()
    host_only = model.host(x)
    assert torch.equal(model(x), host_only) and calls == []
    evaluate_with_counterfactuals(model, TASK, _val_batches(64))
    assert calls == []
    model.train()
    model(x)
    assert calls == [1], "in training the seed runs (it learns from the host's error)"


def test_evaluation_restores_training_mode_and_leaves_weights_alone():
    model = _mixed_model(MIXES["blend-hold-fossil"])
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate_with_counterfactuals(model, TASK, _val_batches(100))
    assert model.training, "training mode must be restored"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "evaluation must not update BN statistics"
    model.eval()
    evaluate_with_counterfactuals(model, TASK, _val_batches(100))
    assert not model.training


def test_fossil_loaded_from_a_manifest_without_alpha_is_still_measured():
    """FOSSILIZED output is h + f(h) whatever the stored α, so its counterfactual must not depend on α either.
    A manifest that names a fossil but leaves α at its default 0.0 (hand-written or older) makes
    `contributing_slots` skip a slot that does change the output."""
    torch.manual_seed(0)
    model = tiny_model()
    manifest = model.manifest()
    m = next(s for s in manifest.slots if s.name == "block3")
    m.stage, m.blueprint, m.tempo, m.curve = Stage.FOSSILIZED.name, "conv_light", 3, "linear"  # α left at 0.0
    model.load_manifest(manifest)
    perturb(model.slot("block3").seed, scale=0.5, seed=1)
    model.eval()
    x = images(4, seed=2)
    assert not torch.allclose(_separate_logits(model, x, None), _separate_logits(model, x, "block3"), atol=1e-4)
    assert contributing_slots(model) == ["block3"]


def test_a_withering_seed_gets_an_off_and_a_whole_branch_equal_to_separate_passes():
    """Emrakul's audit branches: the withering seed off and at α = 1, each equal to a separate forward; its churn
    is their metric difference on the same examples, and loss without − with."""
    model = _mixed_model({"block1": Stage.FOSSILIZED, "block2": Stage.FOSSILIZED, "block3": Stage.HOLDING})
    model.wither("block2")
    model.slot("block2").step_epoch()  # α = 1 − 1/4 with the default tempo
    assert 0.0 < model.slot("block2").alpha < 1.0
    x = images(6, seed=3)
    slots = contributing_slots(model)
    fused = fused_outputs(model, x, slots)
    assert fused.shape == (1 + len(slots) + 1, 6, 10)  # as-is, block1 off, block2 off, block2 whole, block3 off
    assert torch.allclose(fused[2], _separate_logits(model, x, "block2"), atol=1e-5)
    model.slot("block2").alpha_override = 1.0
    whole = model(x)
    model.slot("block2").alpha_override = None
    assert torch.allclose(fused[3], whole, atol=1e-5) and not torch.allclose(fused[3], fused[0], atol=1e-4)
    assert torch.allclose(fused[4], _separate_logits(model, x, "block3"), atol=1e-5)
    loader = _val_batches()
    ev = evaluate_with_counterfactuals(model, TASK, loader)
    loss_off, acc_off = _separate_accuracy(model, loader, "block2")
    model.slot("block2").alpha_override = 1.0
    loss_on, acc_on = _separate_accuracy(model, loader, None)
    model.slot("block2").alpha_override = None
    assert set(ev.churns) == {"block2"}
    assert ev.churns["block2"][0] == pytest.approx(acc_on - acc_off, abs=1e-6)
    assert ev.churns["block2"][1] == pytest.approx(loss_off - loss_on, rel=1e-5)
