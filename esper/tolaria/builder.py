"""The one builder of runs: a world config (task data, host, plane, trainer, Governor) → Task, model, Run."""

from __future__ import annotations

from typing import Callable

import torch

from esper.emrakul import build_reaper
from esper.kasmina import MorphogeneticModel
from esper.kasmina.model import fitting_blueprints, plane_action_spec
from esper.leyline.actions import ActionSpec
from esper.kasmina.hosts import build_host
from esper.leyline.experiment import ConfigError
from esper.world import WorldConfig
from esper.tolaria.run import Run
from esper.tolaria.task import Task, build_task


def build_world_task(world: WorldConfig, device: torch.device) -> Task:
    """The world's task on `device`, validation cut to `world.val_images` (load once, share between runs)."""
    return build_task(world.data, device, world.val_images)


def build_model(world: WorldConfig) -> MorphogeneticModel:
    """A fresh model of `world` (host + Kasmina plane) on the CPU: what a run trains."""
    return MorphogeneticModel(build_host(world.host), world.kasmina)


def action_spec(world: WorldConfig) -> ActionSpec:
    """The world's action layout (what a policy's heads and an agent's features are sized by) without building a
    model: the host is made on the meta device — its injection points and parameter count, no weights. Unknown
    blueprints, or blueprints that fit no point, raise ConfigError naming them."""
    with torch.device("meta"):
        host = build_host(world.host)
    points = list(host.injection_points())
    kasmina = world.kasmina.model_copy(update={"blueprints": fitting_blueprints(world.kasmina.blueprints, points)})
    return plane_action_spec(points, sum(p.numel() for p in host.parameters()), kasmina)


def build_run(world: WorldConfig, task: Task, *, seed: int, device: torch.device, data_seed: int | None = None,
              prepare: Callable[[MorphogeneticModel], None] | None = None, capacity_price: float = 0.0) -> Run:
    """A Run of `world` on `task`: the model is initialised from `seed` (and `prepare(model)`, e.g. a capacity
    control's pre-grown seed, draws from the same stream); the training batches' order comes from `data_seed`
    (default `seed`). `capacity_price` is the price of capacity the run's controller is told (the RL side's rent
    λ, `world.reward.rent_lambda`; the engine itself charges nothing). The process's own RNG stream is left as it
    was."""
    outside = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_model(world).to(device)
        if prepare is not None:
            prepare(model)
        rng_state = torch.get_rng_state()
    finally:
        torch.set_rng_state(outside)
    check_output_size(model, task)
    reaper = build_reaper(world.emrakul, world.kasmina.wither_tempo)
    return Run(model, task, world.trainer, world.governor, data_seed=seed if data_seed is None else data_seed,
               rng_state=rng_state, rent_lambda=capacity_price, reaper=reaper)


def check_output_size(model: MorphogeneticModel, task: Task) -> None:
    """The host must produce the task's output size (a ConfigError naming the host field otherwise)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        size = model(task.nominal_input()).shape[-1]
    model.train(was_training)
    if size != task.output_size:
        raise ConfigError(f"host: the host outputs {size} values per example but task {task.name!r} needs "
                          f"{task.output_size} (host.num_classes for a CNN, host.vocab_size for a transformer)")
