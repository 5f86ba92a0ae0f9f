"""Training-compute accounting: the trainer's FLOPs equal what torch's FLOP counter sees over whole real epochs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from _support import advance_to, image_task, open_gates, tiny_model
from esper.leyline import Stage
from esper.tolaria.trainer import TrainerConfig
from esper.tamiyo import ScheduleTamiyo
from esper.tolaria.data import load_synthetic, split_train_val
from esper.tolaria.flops import host_train_flops, seed_train_flops
from esper.tolaria.governor import GovernorConfig
from esper.tolaria.run import Run, run_training
from esper.tolaria.trainer import Trainer

_TRAIN, _VAL = split_train_val(load_synthetic(300, seed=0), 0.2, seed=0)
_TASK = image_task(_TRAIN, _VAL)
CFG = TrainerConfig(epochs=4, batch_size=64, max_batches_per_epoch=3)


def _counted_epoch(trainer: Trainer) -> tuple[float, float]:
    """(FLOPs the trainer books for one epoch, FLOPs torch's counter saw in it)."""
    before = trainer.train_flops
    with FlopCounterMode(display=False) as counter:
        trainer.train_epoch()
    return trainer.train_flops - before, float(counter.get_total_flops())


@pytest.mark.parametrize("stages", [
    {},  # the host alone
    {"block1": Stage.GERMINATED, "block2": Stage.TRAINING, "block3": Stage.BLENDING},  # α = 0: block3 idle
    {"block1": Stage.FOSSILIZED, "block2": Stage.HOLDING, "block3": Stage.FOSSILIZED},
], ids=["host", "training-blending", "fossils-holding"])
def test_booked_flops_match_the_counter_over_a_real_epoch(stages):
    torch.manual_seed(0)
    model = tiny_model(open_gates())
    for slot, stage in stages.items():
        model.germinate(slot, "conv_light" if slot != "block2" else "bottleneck", tempo=3, curve="linear")
        advance_to(model, slot, stage)
    trainer = Trainer(model, _TASK, CFG, seed=0)
    trainer.train_epoch()  # first epoch: the one-off per-sample measurements happen outside the counted epoch
    booked, counted = _counted_epoch(trainer)
    assert counted > 0 and booked == pytest.approx(counted, rel=0.05), (booked, counted)


def test_a_germinated_seed_costs_nothing_and_a_live_one_its_own_compute():
    torch.manual_seed(0)
    model = tiny_model(open_gates())
    trainer = Trainer(model, _TASK, CFG, seed=0)
    trainer.train_epoch()
    host_epoch, _ = _counted_epoch(trainer)
    model.germinate("block3", "conv_light", tempo=3, curve="linear")
    germinated, _ = _counted_epoch(trainer)
    assert germinated == host_epoch, "a GERMINATED seed does not run"
    model.advance("block3")  # → TRAINING
    training, _ = _counted_epoch(trainer)
    samples = 3 * 64
    point = model.slot("block3").point
    assert training - host_epoch == pytest.approx(samples * seed_train_flops("conv_light", point, False))
    assert host_epoch == pytest.approx(samples * host_train_flops(model, _TRAIN.images[:1].float()))


def test_runs_report_cumulative_flops_in_results_and_telemetry():
    torch.manual_seed(0)
    run = Run(tiny_model(), _TASK, CFG, GovernorConfig(), data_seed=0)
    events = []
    run.listen(events.append)
    result = run_training(run, ScheduleTamiyo(0, "block3", "conv_light", 3))
    flops = [e.train_flops for e in events if e.kind == "epoch"]
    assert len(flops) == CFG.epochs and 0 < flops[0] and all(b > a for a, b in zip(flops, flops[1:]))
    assert result.train_flops == flops[-1] == run.trainer.train_flops
    steps = [b - a for a, b in zip([0.0] + flops, flops)]
    # germinated at 0 (idle), training at 1, blending at α = 0 at 2 (idle), blending at α = 1/3 at 3
    assert steps[0] == steps[2] < steps[1] == steps[3]
    assert all(e.wall_seconds > 0 for e in events if e.kind == "epoch")


def test_an_equal_compute_run_stops_at_its_budget_with_the_schedule_over_it():
    """With trainer.budget_flops the run ends at the batch that spends the budget (whatever its epochs), and the
    cosine LR schedule runs over the FLOPs spent: near zero at the end, whatever the epoch count."""
    torch.manual_seed(0)
    per_epoch = Trainer(tiny_model(), _TASK, CFG, seed=0)
    per_epoch.train_epoch()  # the host alone: 3 batches of 64
    budget = 2.5 * per_epoch.train_flops
    assert per_epoch.host_epoch_flops == per_epoch.train_flops, "the unit of budget_host_epochs: one bare-host epoch"
    cfg = CFG.model_copy(update={"budget_host_epochs": 2.5, "epochs": 10})
    run = Run(tiny_model(), _TASK, cfg, GovernorConfig(), data_seed=0)
    result = run_training(run, ScheduleTamiyo(0, "block3", "conv_light", 3))
    batch = per_epoch.train_flops / 3
    assert run.trainer.budget == budget
    assert budget <= result.train_flops < budget + 2 * batch, "stops at the batch that spends the budget"
    # the host alone would train 3 epochs for 2.5 epochs' FLOPs; its growing seed makes epoch 2 dearer: 2 suffice
    assert len(result.metric_history) == 2 < cfg.epochs and run.done
    lr = run.trainer.host_opt.param_groups[0]["lr"]
    assert lr < 0.05 * cfg.lr, "the schedule ended with the budget"


def test_compute_to_target_reads_the_first_epoch_at_the_big_controls_final_metric():
    from esper.study.tables import compute_to_target

    def row(arm, seed, metrics, flops):  # the external set reads 0.1 lower, except the schedule's seed 1 at the end
        held_out = [m - 0.1 for m in metrics[:-1]] + [metrics[-1] + (0.1 if (arm, seed) == ("schedule", 1) else -0.1)]
        return {"arm": arm, "seed": seed, "val_metric": metrics[-1], "train_flops": flops[-1],
                "metric_history": metrics, "flops_history": flops, "eval_metric": held_out[-1],
                "eval_metric_history": held_out}

    rows = [row("capacity", 0, [0.4, 0.6], [2e12, 4e12]), row("capacity", 1, [0.5, 0.6], [2e12, 4e12]),
            row("schedule", 0, [0.3, 0.6, 0.7], [1e12, 2e12, 4e12]), row("schedule", 1, [0.3, 0.5, 0.55], [1e12, 2e12, 4e12])]
    table, target = compute_to_target(rows, ["capacity", "schedule"], "accuracy")
    assert target == pytest.approx(0.6)
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "arm" not in line}
    assert "| 2/2 | 4 ± 0 | +0.0% |" in lines["capacity"]  # reaches its own mean at its last epoch: no saving
    assert "| 1/2 | 2 ± 0 | +50.0% |" in lines["schedule"]  # one seed at 2 TFLOPs of the control's 4; one never
    table, target = compute_to_target(rows, ["capacity", "schedule"], "accuracy", split="eval")
    assert target == pytest.approx(0.5) and "final external evaluation accuracy" in table
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "arm" not in line}
    assert "| 2/2 | 3 ± 1.4 | +25.0% |" in lines["schedule"]  # on the external set seed 1 reaches it too, at its end (4)

def test_evaluation_flops_are_booked_apart_and_match_the_counter_over_whole_passes():
    """Validation passes are not training compute: booked as eval FLOPs (the model as it is) and counterfactual
    FLOPs (the branches with a seed off), each equal to what torch's counter sees over the whole pass."""
    from esper.tolaria.counterfactual import evaluate_with_counterfactuals

    torch.manual_seed(0)
    model = tiny_model(open_gates())
    for slot in ("block1", "block3"):
        model.germinate(slot, "conv_light", tempo=3, curve="linear")
        advance_to(model, slot, Stage.FOSSILIZED)
    run = Run(model, _TASK, CFG, GovernorConfig(), data_seed=0)
    first_eval, train = run.eval_flops, run.trainer.train_flops
    with FlopCounterMode(display=False) as plain:
        evaluate_with_counterfactuals(model, _TASK, _TASK.val_batches, counterfactuals=False)
    with FlopCounterMode(display=False) as fused:
        evaluate_with_counterfactuals(model, _TASK, _TASK.val_batches)
    assert first_eval == pytest.approx(plain.get_total_flops(), rel=0.05) and train == 0.0
    run.finish_epoch(run.trainer.train_epoch())
    assert run.eval_flops - first_eval == pytest.approx(plain.get_total_flops(), rel=0.05)
    assert run.counterfactual_flops == pytest.approx(fused.get_total_flops() - plain.get_total_flops(), rel=0.05)
    assert run.counterfactual_flops > 0 and run.trainer.train_flops > 0
    result = run.result()
    assert (result.eval_flops, result.counterfactual_flops) == (run.eval_flops, run.counterfactual_flops)


def test_with_an_external_set_every_epoch_reports_its_metric_for_compute_to_target():
    from esper.tolaria.counterfactual import evaluate_with_counterfactuals

    torch.manual_seed(0)
    task = image_task(_TRAIN, _VAL, eval_set=_VAL.subset(torch.arange(20)))
    run = Run(tiny_model(), task, CFG, GovernorConfig(), data_seed=0)
    result = run_training(run, ScheduleTamiyo(0, "block3", "conv_light", 3))
    assert len(result.eval_metric_history) == len(result.metric_history) == CFG.epochs
    assert result.eval_metric_history[-1] == result.eval_metric == \
        evaluate_with_counterfactuals(run.model, task, task.eval_batches, counterfactuals=False).metric
    assert result.eval_flops > 0 and run_training(Run(tiny_model(), _TASK, CFG, GovernorConfig(), data_seed=0),
                                                  ScheduleTamiyo(0, "block3", "conv_light", 3)).eval_metric_history == []
