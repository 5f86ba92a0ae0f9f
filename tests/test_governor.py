"""The Governor: NaN/Inf and loss divergence roll back to the last good state; ordinary noise does not."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from _support import EventLog, advance_to, image_task, tiny_model
from esper.leyline import Stage
from esper.leyline.telemetry import CullEvent, RollbackEvent
from esper.tolaria.data import load_synthetic, split_train_val
from esper.tolaria.governor import Governor, GovernorConfig
from esper.tolaria.trainer import Trainer, TrainerConfig

_DATA = load_synthetic(320, seed=0)
_TRAIN, _VAL = split_train_val(_DATA, 0.2, seed=0)
_TASK = image_task(_TRAIN, _VAL)


def _setup(max_batches: int = 2, model=None, governor_cfg: GovernorConfig | None = None, **trainer_kw):
    torch.manual_seed(0)
    model = model or tiny_model()
    log = EventLog()
    model.listeners.append(log)
    cfg = TrainerConfig(epochs=10, batch_size=64, max_batches_per_epoch=max_batches, **trainer_kw)
    trainer = Trainer(model, _TASK, cfg, seed=0)
    governor = Governor(trainer, governor_cfg, emit=log)
    return model, trainer, governor, log


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _good_epoch(trainer, governor) -> float:
    loss = trainer.train_epoch()
    assert math.isfinite(loss)
    assert governor.observe(loss, _finite(trainer.model)) is False
    return loss


def _state(model) -> dict[str, torch.Tensor]:
    return copy.deepcopy(model.state_dict())


def _rollbacks(log) -> list[RollbackEvent]:
    return [e for e in log.events if isinstance(e, RollbackEvent)]


# ------------------------------------------------------------------------------------------------ NaN / Inf
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_rolls_back_exactly_and_culls_live_seeds(bad):
    model, trainer, governor, log = _setup()
    _good_epoch(trainer, governor)
    model.germinate("block2", "conv_light", tempo=3, curve="linear")
    advance_to(model, "block2", Stage.TRAINING)
    _good_epoch(trainer, governor)  # the snapshot now holds the live seed
    good = _state(model)
    good_opt = copy.deepcopy(trainer.host_opt.state_dict())
    seed_keys = {k for k in good if k.startswith("slots.block2.")}
    assert seed_keys

    with torch.no_grad():
        model.host.blocks[1][0].weight[0, 0, 0, 0] = bad
    loss = trainer.train_epoch()
    assert not (math.isfinite(loss) and _finite(model))
    assert governor.observe(loss, _finite(model)) is True
    assert governor.rollbacks == 1

    # weights: exactly the last good state (host, BN statistics …); the culled seed's tensors are gone
    now = model.state_dict()
    assert set(now) == set(good) - seed_keys
    for k, v in now.items():
        assert torch.equal(v, good[k]), k
    # host optimiser: the last good momentum buffers
    restored_opt = trainer.host_opt.state_dict()
    for i, st in good_opt["state"].items():
        assert torch.equal(restored_opt["state"][i]["momentum_buffer"], st["momentum_buffer"])
    # live seeds culled, their optimisers dropped
    assert model.slot("block2").stage is Stage.CULLED and model.slot("block2").seed is None
    assert trainer.seed_opts == {}
    culls = [e for e in log.events if isinstance(e, CullEvent)]
    assert [(c.slot, c.reason) for c in culls] == [("block2", "governor rollback")]
    (event,) = _rollbacks(log)
    assert event.restored_epoch == 2 and event.epoch == 3
    assert trainer.epoch == 2  # the run's clock returns with the slots' clocks: epoch 3 is trained again
    assert "non-finite" in event.reason

    # training goes on, finite
    for _ in range(2):
        loss = trainer.train_epoch()
        assert math.isfinite(loss) and _finite(model)
        assert governor.observe(loss, True) is False
    assert governor.rollbacks == 1


def test_nan_rollback_in_the_first_epoch_restores_the_initial_state():
    model, trainer, governor, log = _setup()
    initial = _state(model)
    with torch.no_grad():
        model.host.head.weight.fill_(float("nan"))
    loss = trainer.train_epoch()
    assert governor.observe(loss, _finite(model)) is True
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    assert _rollbacks(log)[0].restored_epoch == 0
    assert math.isfinite(trainer.train_epoch())


def test_params_non_finite_with_finite_loss_rolls_back():
    """A finite loss does not excuse non-finite parameters (e.g. an Inf that appeared in the last step)."""
    model, trainer, governor, log = _setup()
    _good_epoch(trainer, governor)
    assert governor.observe(2.0, params_finite=False) is True
    assert "non-finite parameters" in _rollbacks(log)[0].reason


# ------------------------------------------------------------------------------------------------ divergence
def test_loss_explosion_rolls_back_via_divergence():
    model, trainer, governor, log = _setup(max_batches=1)
    cfg = governor.cfg
    for _ in range(cfg.min_history):
        _good_epoch(trainer, governor)
    good = _state(model)
    with torch.no_grad():
        model.host.head.weight.mul_(1e3)
        model.host.head.bias.mul_(1e3)
    loss = trainer.train_epoch()
    assert math.isfinite(loss), "the first batch's loss is computed before any update: finite, just huge"
    mean = sum(governor.losses) / len(governor.losses)
    assert loss > mean * (1 + cfg.min_rise)
    verdict = governor.judge(loss)
    assert not verdict.ok and "diverged" in verdict.reason
    assert governor.observe(loss, _finite(model)) is True
    (event,) = _rollbacks(log)
    assert "diverged" in event.reason and event.restored_epoch == cfg.min_history
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    loss = trainer.train_epoch()
    assert math.isfinite(loss) and loss < 10.0
    assert governor.observe(loss, _finite(model)) is False


def test_no_divergence_before_min_history():
    _, _, governor, _ = _setup()
    governor.observe(2.0)
    governor.observe(2.0)
    assert governor.judge(1e6).ok, "two epochs of history are not enough to call a divergence"
    governor.observe(2.0)
    assert not governor.judge(1e6).ok


def _noisy_decreasing(n: int, seed: int, noise: float) -> list[float]:
    rng = random.Random(seed)
    return [max(0.05, 2.3 * math.exp(-0.15 * i) * (1 + rng.uniform(-noise, noise))) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_ordinary_noisy_decreasing_losses_are_not_flagged(seed):
    _, _, governor, log = _setup()
    for loss in _noisy_decreasing(30, seed, noise=0.15):
        assert governor.judge(loss).ok, loss
        assert governor.observe(loss) is False
    assert governor.rollbacks == 0 and not _rollbacks(log)


def test_flat_curve_with_tiny_bump_is_not_flagged():
    _, _, governor, _ = _setup()
    for _ in range(5):
        governor.observe(1.0)
    assert governor.judge(1.01).ok, "σ = 0 on a flat curve: min_rise guards against false alarms"
    assert governor.judge(1.6).ok is False


def test_judge_does_not_change_state():
    _, _, governor, _ = _setup()
    for loss in (2.0, 1.9, 1.8):
        governor.observe(loss)
    before = (list(governor.losses), governor.strikes, governor.rollbacks)
    governor.judge(float("nan"))
    governor.judge(100.0)
    assert (list(governor.losses), governor.strikes, governor.rollbacks) == before


def test_patience_waits_for_consecutive_divergent_epochs():
    _, _, governor, log = _setup(governor_cfg=GovernorConfig(patience=3))
    for loss in (2.0, 1.9, 1.8):
        assert governor.observe(loss) is False
    assert governor.observe(50.0) is False and governor.strikes == 1
    assert governor.observe(50.0) is False and governor.strikes == 2
    assert governor.observe(1.7) is False and governor.strikes == 0, "a good epoch resets the count"
    assert list(governor.losses)[-1] == 1.7 and 50.0 not in governor.losses, "divergent losses stay out of the window"
    assert governor.observe(50.0) is False
    assert governor.observe(50.0) is False
    assert governor.rollbacks == 0
    assert governor.observe(50.0) is True
    assert governor.rollbacks == 1 and governor.strikes == 0
    assert len(_rollbacks(log)) == 1


def test_patience_does_not_delay_nan():
    _, _, governor, _ = _setup(governor_cfg=GovernorConfig(patience=5))
    for loss in (2.0, 1.9, 1.8):
        governor.observe(loss)
    assert governor.observe(float("nan")) is True


def test_disabled_governor_never_rolls_back():
    _, _, governor, log = _setup(governor_cfg=GovernorConfig(enabled=False))
    assert governor.observe(float("nan"), params_finite=False) is False
    assert governor.rollbacks == 0 and not _rollbacks(log)


# ------------------------------------------------------------------------------------------------ optimiser rebuild
def _fossilize(model, slot: str = "block3") -> None:
    model.germinate(slot, "conv_light", tempo=1, curve="linear")
    advance_to(model, slot, Stage.FOSSILIZED)


def test_rollback_with_fossil_restores_its_param_group_and_keeps_training_it():
    model, trainer, governor, log = _setup()
    _good_epoch(trainer, governor)
    _fossilize(model)
    _good_epoch(trainer, governor)  # sync_optimizers added the fossil's group; snapshot holds it
    assert trainer.fossil_group_order == ["block3"] and len(trainer.host_opt.param_groups) == 2
    good = _state(model)
    good_opt = copy.deepcopy(trainer.host_opt.state_dict())

    with torch.no_grad():
        model.host.blocks[0][0].weight.fill_(float("nan"))
    assert governor.observe(trainer.train_epoch(), _finite(model)) is True

    fossil = model.slot("block3")
    assert fossil.stage is Stage.FOSSILIZED, "fossils are host now: a rollback does not cull them"
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    assert set(model.state_dict()) == set(good)
    groups = trainer.host_opt.param_groups
    assert len(groups) == 2 and trainer.fossil_group_order == ["block3"]
    fossil_params = list(fossil.seed.parameters())
    assert len(groups[1]["params"]) == len(fossil_params)
    assert all(p is q for p, q in zip(groups[1]["params"], fossil_params)), "the group must hold the live fossil module"
    restored = trainer.host_opt.state_dict()
    assert restored["state"].keys() == good_opt["state"].keys()
    for i, st in good_opt["state"].items():
        assert torch.equal(restored["state"][i]["momentum_buffer"], st["momentum_buffer"])

    before = [p.detach().clone() for p in fossil_params]
    loss = trainer.train_epoch()  # must not raise (e.g. duplicate param groups) …
    assert math.isfinite(loss) and _finite(model)
    assert len(trainer.host_opt.param_groups) == 2
    assert any(not torch.equal(b, p) for b, p in zip(before, fossil.seed.parameters())), "… and still trains the fossil"
    assert governor.observe(loss, True) is False


def test_rollback_to_a_snapshot_taken_before_the_fossil_group_existed():
    """A fossil loaded before the Trainer existed (capacity arm): the first snapshot has no fossil group."""
    torch.manual_seed(0)
    model = tiny_model()
    manifest = model.manifest()
    m = next(s for s in manifest.slots if s.name == "block3")
    m.stage, m.blueprint, m.tempo, m.curve, m.alpha = Stage.FOSSILIZED.name, "conv_light", 3, "linear", 1.0
    model.load_manifest(manifest)
    model, trainer, governor, log = _setup(model=model)
    assert trainer.fossil_group_order == []
    with torch.no_grad():
        model.host.head.weight.fill_(float("nan"))
    assert governor.observe(trainer.train_epoch(), _finite(model)) is True
    for _ in range(2):
        loss = trainer.train_epoch()
        assert math.isfinite(loss) and _finite(model)
        assert governor.observe(loss, True) is False
    assert trainer.fossil_group_order == ["block3"] and len(trainer.host_opt.param_groups) == 2


def test_live_seed_rolled_back_then_trainer_keeps_working_with_a_new_seed():
    model, trainer, governor, log = _setup()
    model.germinate("block1", "conv_light", tempo=2, curve="linear")
    advance_to(model, "block1", Stage.BLENDING)
    model.step_epoch()
    _good_epoch(trainer, governor)
    with torch.no_grad():
        model.host.head.weight.fill_(float("nan"))
    assert governor.observe(trainer.train_epoch(), _finite(model)) is True
    assert model.slot("block1").stage is Stage.CULLED
    model.step_epoch()  # CULLED → EMBARGOED → (permissive: 1 epoch) …
    model.step_epoch()
    model.step_epoch()
    assert model.slot("block1").stage is Stage.DORMANT
    model.germinate("block1", "conv_light", tempo=2, curve="linear")
    advance_to(model, "block1", Stage.TRAINING)
    loss = trainer.train_epoch()
    assert math.isfinite(loss)
    assert set(trainer.seed_opts) == {"block1"} and trainer.seed_opts["block1"][0] is model.slot("block1").seed
    assert model.slot("block1").grad_norm is not None and model.slot("block1").grad_norm > 0


# ------------------------------------------------------------------------------------------------ telemetry after rollback
def _replay_is_consistent(model, log) -> list[str]:
    """Replay the StageChangeEvents: each must start where the slot's previous one ended, and the last one must
    name the slot's current stage. Returns the problems found."""
    from esper.leyline.telemetry import StageChangeEvent

    known = {name: "DORMANT" for name in model.slots}
    problems = []
    for e in log.events:
        if isinstance(e, StageChangeEvent):
            if e.from_stage != known[e.slot]:
                problems.append(f"{e.slot}: event {e.from_stage}→{e.to_stage} but telemetry last said {known[e.slot]}")
            known[e.slot] = e.to_stage
    for name, slot in model.slots.items():
        if known[name] != slot.stage.name:
            problems.append(f"{name}: telemetry says {known[name]}, slot is {slot.stage.name}")
    return problems


def test_rollback_that_drops_a_new_seed_is_visible_in_stage_telemetry():
    """A seed germinated after the last good snapshot silently vanishes on restore (slot back to DORMANT, no event):
    the stage-change stream (and plot_run's lifecycle spans, germinate/cull counts) no longer matches the plane."""
    model, trainer, governor, log = _setup()
    _good_epoch(trainer, governor)
    model.germinate("block2", "conv_light", tempo=3, curve="linear")
    advance_to(model, "block2", Stage.TRAINING)
    with torch.no_grad():
        model.host.head.weight.fill_(float("nan"))
    assert governor.observe(trainer.train_epoch(), _finite(model)) is True
    assert model.slot("block2").stage is Stage.DORMANT  # the snapshot predates the seed
    assert _replay_is_consistent(model, log) == []


def test_rollback_that_rewinds_a_seed_is_visible_in_stage_telemetry():
    model, trainer, governor, log = _setup()
    model.germinate("block2", "conv_light", tempo=1, curve="linear")
    advance_to(model, "block2", Stage.TRAINING)
    _good_epoch(trainer, governor)  # snapshot: block2 in TRAINING
    advance_to(model, "block2", Stage.HOLDING)  # TRAINING→BLENDING→HOLDING, announced
    with torch.no_grad():
        model.host.head.weight.fill_(float("nan"))
    assert governor.observe(trainer.train_epoch(), _finite(model)) is True
    assert model.slot("block2").stage is Stage.CULLED
    assert _replay_is_consistent(model, log) == []


def test_rollback_undoes_a_fossilization_made_in_the_faulty_epoch():
    model, trainer, governor, log = _setup()
    model.germinate("block3", "conv_light", tempo=1, curve="linear")
    advance_to(model, "block3", Stage.HOLDING)
    _good_epoch(trainer, governor)  # snapshot: block3 HOLDING (live, own Adam), host SGD has one group
    model.advance("block3")  # → FOSSILIZED; the next epoch adds it to the host's SGD …
    with torch.no_grad():
        model.host.head.weight.fill_(float("nan"))
    loss = trainer.train_epoch()
    assert len(trainer.host_opt.param_groups) == 2
    assert governor.observe(loss, _finite(model)) is True  # … and the rollback takes it out again
    assert model.slot("block3").stage is Stage.CULLED, "back to HOLDING (a suspect), then culled"
    assert len(trainer.host_opt.param_groups) == 1 and trainer.fossil_group_order == []
    assert trainer.seed_opts == {}
    loss = trainer.train_epoch()
    assert math.isfinite(loss) and governor.observe(loss, True) is False
