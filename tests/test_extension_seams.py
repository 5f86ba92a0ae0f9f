"""A new host and a new task, defined entirely in this file, run a whole Run and an RL episode with every other
setting at its default: the seams a second domain uses (docs/extending.md)."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from esper.kasmina import InjectionPoint, MorphogeneticModel, read_manifest
from esper.kasmina.hosts import build_host, register_host
from esper.leyline.registry import HostConfig
from esper.leyline.experiment import ConfigError
from esper.leyline.registry import TaskConfig
from esper.world import WorldConfig
from esper.simic.env import EsperEnv
from esper.tamiyo import HeuristicTamiyo
from esper.tolaria.builder import build_run
from esper.tolaria.run import run_training
from esper.tolaria.task import build_task, register_task

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- a vector host
class MLPHostConfig(HostConfig):
    name: Literal["test_mlp"] = "test_mlp"
    """Host family."""
    inputs: int = Field(8, ge=1)
    """Input features."""
    width: int = Field(16, ge=1)
    """Hidden width (four hidden layers; the second and the fourth end with an injection point)."""
    outputs: int = Field(3, ge=2)
    """Classes."""


class MLPHost(nn.Module):
    def __init__(self, config: MLPHostConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.layers = nn.ModuleList([nn.Linear(config.inputs, w)] + [nn.Linear(w, w) for _ in range(3)])
        self.head = nn.Linear(w, config.outputs)
        self.points = {1: InjectionPoint("hidden2", w, "vector"), 3: InjectionPoint("hidden4", w, "vector")}

    def injection_points(self):
        return tuple(self.points.values())

    def forward_through(self, x: Tensor, inject) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if i in self.points:
                x = inject(self.points[i].name, x)
        return self.head(x)

    def host_spec(self) -> dict[str, Any]:
        return {"name": self.config.name, "config": self.config.model_dump(mode="json")}


register_host(MLPHostConfig, MLPHost)


# ---------------------------------------------------------------------------------------------- a vector task
class BlobsConfig(TaskConfig):
    task: Literal["test_blobs"] = "test_blobs"
    """Task family."""
    examples: int = Field(600, ge=10)
    """Training examples (validation: a quarter of that)."""
    classes: int = Field(3, ge=2)
    """Gaussian blobs, one per class."""


class Blobs:
    """Points around `classes` random centres in 8 dimensions; the metric is accuracy."""

    name, metric_name = "test_blobs", "accuracy"

    def __init__(self, config: BlobsConfig, device: torch.device, val_examples: int | None) -> None:
        gen = torch.Generator().manual_seed(0)
        centres = 2.0 * torch.randn(config.classes, 8, generator=gen)

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.randint(0, config.classes, (n,), generator=gen)
            return (centres[y] + torch.randn(n, 8, generator=gen)).to(device), y.to(device)

        self.train = draw(config.examples)
        x, y = draw(val_examples or config.examples // 4)
        self.val_batches, self.eval_batches = [(x, y)], None
        self.output_size, self.chance_loss = config.classes, math.log(config.classes)

    def train_stream(self, batch_size: int, augment: bool, seed: int):
        x, y = self.train
        gen = torch.Generator().manual_seed(seed)

        class Stream:
            def __iter__(self):
                order = torch.randperm(len(y), generator=gen)
                return ((x[order[i:i + batch_size]], y[order[i:i + batch_size]]) for i in range(0, len(y), batch_size))

        return Stream()

    def loss(self, output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        return F.cross_entropy(output, target, reduction=reduction)

    def metric_sums(self, outputs: Tensor, target: Tensor) -> Tensor:
        return (outputs.argmax(-1) == target).sum(dim=1).float().cpu()  # (K, B, C) → (K,)

    def count(self, target: Tensor) -> int:
        return target.shape[0]

    def nominal_input(self) -> Tensor:
        return torch.zeros(1, 8)


register_task(BlobsConfig, Blobs)


def _world(**overrides) -> WorldConfig:
    return WorldConfig.model_validate({"host": {"name": "test_mlp"}, "data": {"task": "test_blobs"}, **overrides})


# ---------------------------------------------------------------------------------------------- the checks
def test_a_registered_host_and_task_run_a_whole_run_with_default_settings():
    world = _world()
    assert world.kasmina == WorldConfig().kasmina and world.trainer == WorldConfig().trainer  # defaults otherwise
    task = build_task(world.data, CPU, world.val_images)
    run = build_run(world, task, seed=0, device=CPU)
    assert run.model.config.blueprints == ("mlp",), "default blueprints: every one that fits a vector point"
    result = run_training(run, HeuristicTamiyo())
    assert run.trainer.epoch == world.trainer.epochs and len(result.metric_history) == world.trainer.epochs
    assert result.metric_name == "accuracy" and 0.0 <= result.val_metric <= 1.0
    assert result.metric_history[-1] > 1 / 3 + 0.2, "the host learns the blobs"
    assert any("GERMINATE" in d for d in result.decisions) and result.params_total > result.params_host
    first = run.observe()
    assert first.signals.chance_loss == pytest.approx(math.log(3))


def test_the_new_world_round_trips_and_its_grown_model_rebuilds(tmp_path):
    world = _world()
    assert WorldConfig.model_validate(world.model_dump(mode="json")) == world
    task = build_task(world.data, CPU, None)
    run = build_run(world, task, seed=1, device=CPU)
    run.model.germinate("hidden4", "mlp", tempo=3, curve="linear")
    run.model.save(tmp_path / "grown.pt")
    rebuilt = MorphogeneticModel.load(tmp_path / "grown.pt", build_host(read_manifest(tmp_path / "grown.pt").host))
    assert isinstance(rebuilt.host, MLPHost) and rebuilt.slot("hidden4").blueprint == "mlp"


def test_an_rl_episode_plays_on_the_new_world():
    env = EsperEnv(_world(trainer={"epochs": 3, "max_batches_per_epoch": 2}))
    obs, _ = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample() * 0)  # WAIT every step
        done, steps = terminated or truncated, steps + 1
    assert steps == 3 and math.isfinite(reward) and 0.0 <= info["val_metric"] <= 1.0


def test_unknown_families_and_mismatched_output_sizes_are_config_errors():
    with pytest.raises(ValueError, match=r"unknown host 'nope'; registered: \[.*'cnn'.*'test_mlp'"):
        WorldConfig.model_validate({"host": {"name": "nope"}})
    with pytest.raises(ValueError, match=r"unknown task 'nope'"):
        WorldConfig.model_validate({"data": {"task": "nope"}})
    with pytest.raises(ValueError, match=r"host\s[\s\S]*width"):
        WorldConfig.model_validate({"host": {"name": "test_mlp", "width": 0}})
    world = _world(host={"name": "test_mlp", "outputs": 5})
    with pytest.raises(ConfigError, match="host"):
        build_run(world, build_task(world.data, CPU, None), seed=0, device=CPU)
