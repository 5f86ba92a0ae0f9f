"""End to end: run_training with real controllers on the synthetic task — completes, grows, reports, repeats."""

from __future__ import annotations

import math

import pytest
import torch

from _support import image_task, tiny_model
from esper.leyline import Stage
from esper.leyline.telemetry import EpochEvent
from esper.nissa import TelemetryHub
from esper.tamiyo import HeuristicConfig, HeuristicTamiyo, ScheduleTamiyo, WaitTamiyo
from esper.tolaria.data import load_synthetic, split_train_val
from esper.tolaria.governor import GovernorConfig
from esper.tolaria.run import Run, RunResult, run_training
from esper.tolaria.trainer import Trainer, TrainerConfig

EPOCHS = 4
_DATA = load_synthetic(400, seed=0)
_TRAIN, _VAL = split_train_val(_DATA, 0.2, seed=0)
_TASK = image_task(_TRAIN, _VAL)
_TASK_WITH_EVAL = image_task(_TRAIN, _VAL, eval_set=_TRAIN.subset(torch.arange(100)))


class Collect:
    def __init__(self):
        self.events = []

    def write(self, event, run):
        self.events.append((event, dict(run)))

    def close(self):
        pass


def _run(controller, seed: int = 0, eval_set: bool = False, epochs: int = EPOCHS, before_epoch=None):
    torch.manual_seed(seed)
    model = tiny_model()
    cfg = TrainerConfig(epochs=epochs, batch_size=64, max_batches_per_epoch=3)
    run = Run(model, _TASK_WITH_EVAL if eval_set else _TASK, cfg, GovernorConfig(), data_seed=seed)
    sink = Collect()
    hub = TelemetryHub([sink], arm=controller.name, seed=seed)
    run.listen(hub)
    result = run_training(run, controller, before_epoch=before_epoch)
    hub.close()
    return result, model, hub, sink


def _check_common(result: RunResult, hub: TelemetryHub, sink: Collect) -> None:
    assert result.metric_name == "accuracy"
    assert math.isfinite(result.val_metric) and 0.0 <= result.val_metric <= 1.0
    assert math.isfinite(result.val_loss)
    assert len(result.decisions) == EPOCHS
    assert [int(d.split(":")[0]) for d in result.decisions] == list(range(EPOCHS))
    assert len(result.metric_history) == EPOCHS and result.metric_history[-1] == result.val_metric
    assert result.rollbacks == 0
    assert result.wall_seconds > 0
    epochs = [e for e, _ in sink.events if isinstance(e, EpochEvent)]
    assert [e.epoch for e in epochs] == list(range(1, EPOCHS + 1))
    assert [e.val_metric for e in epochs] == result.metric_history
    assert hub.counts["epoch"] == EPOCHS
    assert all(run["seed"] == 0 for _, run in sink.events)


def test_heuristic_run_germinates_and_reports():
    ctl = HeuristicTamiyo(HeuristicConfig(warmup_epochs=0, plateau_delta=1.0, min_epochs_left=0))
    result, model, hub, sink = _run(ctl)
    _check_common(result, hub, sink)
    # a plateau needs plateau_window + 1 = 3 metrics; the untrained model's is the first: germination at epoch 2
    assert [d.split()[1] for d in result.decisions] == ["WAIT", "WAIT", "GERMINATE", "ADVANCE"]
    assert "block3" in result.decisions[2] and "conv_light" in result.decisions[2]
    assert hub.counts.get("germinate") == 1 and hub.counts.get("stage_change", 0) >= 1
    assert model.slot("block3").stage is Stage.TRAINING
    assert result.params_total > result.params_host, "a live seed counts towards total parameters"
    assert result.excess_ratio == pytest.approx((result.params_total - result.params_host) / result.params_host)


def test_schedule_run_grows_and_blends():
    result, model, hub, sink = _run(ScheduleTamiyo(0, "block3", "conv_light", 3), eval_set=True)
    _check_common(result, hub, sink)
    ops = [d.split()[1] for d in result.decisions]
    assert ops == ["GERMINATE", "ADVANCE", "ADVANCE", "WAIT"], "germinate, →TRAINING, →BLENDING, wait for α = 1"
    slot = model.slot("block3")
    assert slot.stage is Stage.BLENDING and slot.alpha == pytest.approx(2 / 3)
    assert slot.contribution is not None, "a blending seed's contribution is measured each epoch"
    assert result.params_total > result.params_host
    assert result.params_host == sum(p.numel() for p in model.host.parameters())
    assert result.eval_metric is not None and 0.0 <= result.eval_metric <= 1.0
    kinds = [e.kind for e, _ in sink.events]
    assert kinds.count("germinate") == 1 and kinds.count("gate") >= 3
    assert [e.to_stage for e, _ in sink.events if e.kind == "stage_change"] == ["GERMINATED", "TRAINING", "BLENDING"]
    last = [e for e, _ in sink.events if isinstance(e, EpochEvent)][-1]
    assert last.params_active == slot.seed_params > 0


def test_static_run_keeps_the_host():
    result, model, hub, sink = _run(WaitTamiyo())
    _check_common(result, hub, sink)
    assert all("WAIT" in d for d in result.decisions)
    assert result.params_total == result.params_host and result.excess_ratio == 0.0
    assert set(hub.counts) == {"epoch"}


def test_training_lowers_the_train_loss():
    """Sanity: the epoch loop learns — it fits a small fixed training set (no augmentation, constant LR)."""
    torch.manual_seed(0)
    model = tiny_model()
    small = _TRAIN.subset(torch.arange(64))
    cfg = TrainerConfig(epochs=8, batch_size=64, augment=False, schedule="constant")
    trainer = Trainer(model, image_task(small, _VAL), cfg, seed=0)
    losses = [trainer.train_epoch() for _ in range(8)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.25, losses
    assert trainer.epoch == 8


def test_same_seed_twice_gives_identical_results():
    ctl = lambda: ScheduleTamiyo(0, "block3", "conv_light", 3)  # noqa: E731  (a seed is grafted: its init must repeat too)
    a, model_a, _, _ = _run(ctl())
    b, model_b, _, _ = _run(ctl())
    assert a.val_metric == b.val_metric and a.val_loss == b.val_loss
    assert a.metric_history == b.metric_history and a.decisions == b.decisions
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c, model_c, _, _ = _run(ctl(), seed=1)
    sc = model_c.state_dict()
    assert any(not torch.equal(sa[k], sc[k]) for k in sa), "a different seed is a different run"


def _nan_at(epoch: int):
    """A before_epoch hook that writes NaN into a host weight just before training epoch `epoch`, once
    (like experiments/governor_faults.py)."""
    calls = []

    def inject(trainer) -> None:
        calls.append(trainer.epoch)
        if trainer.epoch == epoch and calls.count(epoch) == 1:
            with torch.no_grad():
                trainer.model.host.blocks[2][0].weight.view(-1)[0] = float("nan")

    inject.calls = calls
    return inject


def test_run_survives_a_nan_fault_with_one_rollback():
    hook = _nan_at(3)
    result, model, hub, sink = _run(ScheduleTamiyo(0, "block3", "conv_light", 3), epochs=5, before_epoch=hook)
    # the hook runs before every training epoch; the rollback returns the run to epoch 3, which is trained again
    assert hook.calls == [0, 1, 2, 3, 3, 4]
    assert result.rollbacks == 1 and hub.counts["rollback"] == 1
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert all(math.isfinite(a) for a in result.metric_history) and len(result.decisions) == 6
    rollback = next(e for e, _ in sink.events if e.kind == "rollback")
    assert rollback.restored_epoch == 3 and rollback.epoch == 4
    # the blending seed was the suspect: culled, its slot through the embargo by the end, parameters the host's
    assert [e.reason for e, _ in sink.events if e.kind == "cull"] == ["governor rollback"]
    assert model.slot("block3").seed is None and model.slot("block3").stage is Stage.DORMANT
    assert result.params_total == result.params_host
    epochs = [e for e, _ in sink.events if isinstance(e, EpochEvent)]
    assert epochs[3].train_loss == 1e9, "the faulty epoch's loss is recorded as a large finite stand-in"
    assert math.isfinite(epochs[4].train_loss) and epochs[4].train_loss < 10
