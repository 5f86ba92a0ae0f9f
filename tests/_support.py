"""Shared helpers of the test suite (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from torch import nn

from esper.kasmina import BLUEPRINTS, MorphogeneticModel
from esper.kasmina.hosts import CNNHost
from esper.kasmina.config import GateConfig, KasminaConfig
from esper.kasmina.hosts import CNNHostConfig
from esper.leyline import Stage, TrainingSignals
from esper.leyline.control import Observation
from esper.leyline.telemetry import StageChangeEvent
from esper.world import WorldConfig
from esper.tolaria.datasets import DataBundle, channel_stats
from esper.tolaria.image_task import ImageClassification

CONV_BLUEPRINTS: tuple[str, ...] = tuple(n for n, b in BLUEPRINTS.items() if b.kind == "conv2d")

# Stages in which a slot holds a seed module (mirrors kasmina.slot.SEED_STAGES, restated here on purpose).
SEED_STAGES = frozenset({Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED,
                         Stage.WITHERING})


def tiny_host() -> CNNHost:
    return CNNHost(CNNHostConfig(preset="tiny"))


def open_gates(**overrides) -> KasminaConfig:
    """A custom profile that lets every blueprint fit every tiny slot and every advance pass at once."""
    fields = dict(max_seed_param_ratio=100.0, min_training_epochs=0, min_holding_epochs=0, embargo_epochs=1)
    fields.update(overrides)
    return KasminaConfig(gate_profile="custom", gates=GateConfig(**fields))


def tiny_model(config: KasminaConfig | None = None) -> MorphogeneticModel:
    return MorphogeneticModel(tiny_host(), config or KasminaConfig(gate_profile="permissive"))


def images(n: int = 2, seed: int = 0, side: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, side, side, generator=gen)


def labels(n: int = 2, seed: int = 0, classes: int = 10) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, classes, (n,), generator=gen)


def perturb(module: nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Add deterministic noise to every parameter, so zero-initialised branches compute something non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def advance_to(model: MorphogeneticModel, slot: str, stage: Stage) -> None:
    """Drive a germinated slot forward along the happy path until it reaches `stage` (ticking epochs in BLENDING)."""
    order = [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING, Stage.FOSSILIZED]
    s = model.slot(slot)
    while order.index(s.stage) < order.index(stage):
        if s.stage is Stage.BLENDING:
            while s.alpha < 1.0:
                s.step_epoch()
        s.advance()
    assert s.stage is stage


class EventLog:
    """A model listener that keeps every telemetry event."""

    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def stage_changes(self) -> list[StageChangeEvent]:
        return [e for e in self.events if isinstance(e, StageChangeEvent)]


def tiny_world(**overrides) -> WorldConfig:
    """A world of a few hundred synthetic images, the tiny host and 2-batch epochs (fields overridable)."""
    fields = dict(data={"source": "synthetic", "limit": 240, "val_fraction": 0.25}, host={"preset": "tiny"},
                  trainer={"epochs": 4, "batch_size": 64, "max_batches_per_epoch": 2}, val_images=None, device="cpu")
    fields.update(overrides)
    return WorldConfig.model_validate(fields)


def image_task(train, val, eval_set=None, num_classes: int = 10) -> ImageClassification:
    """The image-classification Task over hand-made ImageSets (normalised with the train split's statistics)."""
    mean, std = channel_stats(train)
    return ImageClassification(DataBundle(train, val, eval_set, mean, std, "test", num_classes))


def obs_of(model, signals: TrainingSignals) -> Observation:
    """What a controller sees of `model` with these training signals."""
    return Observation(signals, model.reports(), model.masks(), model.action_spec)


def signals_at(epoch: int = 5, max_epochs: int = 20, accs: tuple[float, ...] | None = None) -> TrainingSignals:
    """Training signals at `epoch` with a flat (or the given) metric history."""
    accs = (0.5,) * epoch if accs is None else accs
    return TrainingSignals(epoch=epoch, max_epochs=max_epochs, train_loss=1.0, val_loss=1.0,
                           val_metric=accs[-1] if accs else 0.0, host_params=1000, chance_loss=2.3,
                           loss_history=(1.0,) * len(accs), metric_history=accs)


def run_script(script: str, *args: str, cwd=None):
    """Run experiments/<script>.py as `python experiments/<script>.py ARGS` would, in this interpreter (runpy, as
    __main__: no fresh torch import per case), for bad-input tests that must end before anything starts.
    Returns (exit code, stdout, stderr, seconds). Esper's log handlers and the working directory are restored.
    `ray.init` is replaced for the run by one that fails the test: a script must reject bad input before it starts
    a cluster (the suite's own cluster may already be up, so `ray.is_initialized()` alone would not tell)."""
    import contextlib
    import io
    import logging
    import os
    import runpy
    import sys
    import time
    from pathlib import Path

    import ray

    root = Path(__file__).resolve().parents[1]
    out, err, code, starts = io.StringIO(), io.StringIO(), 0, []
    real_init = ray.init

    def refuse(*args, **kwargs):
        starts.append(args)
        raise AssertionError(f"{script} started Ray before rejecting its input")

    handlers, argv, here = list(logging.getLogger("esper").handlers), sys.argv, os.getcwd()
    started = time.monotonic()
    try:
        os.chdir(cwd or root)
        sys.argv = [f"experiments/{script}.py", *args]
        ray.init = refuse
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(root / "experiments" / f"{script}.py"), run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    err.write(exc.code + "\n")
    finally:
        ray.init = real_init
        sys.argv = argv
        os.chdir(here)
        logging.getLogger("esper").handlers = handlers
    assert not starts, f"{script} started Ray before rejecting its input"
    return code, out.getvalue(), err.getvalue(), time.monotonic() - started
