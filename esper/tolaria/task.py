"""The Task seam: what a host is trained on and judged by (data streams, loss, metric), and the task registry.

Everything above the Task — Trainer, counterfactual evaluation, the Governor, gates, observation features,
rewards, comparisons, telemetry — speaks of the task's *metric* (higher is better) and never of images or
classes. A new task is one class implementing `Task`, its config class, and one `register_task(config, builder)`
call that registers both together (docs/extending.md).
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

import torch
from torch import Tensor

from esper.leyline.registry import TASK_CONFIGS, TaskConfig

Batch = tuple[Tensor, Tensor]


class Task(Protocol):
    """A supervised task on one device. Batches are (input, target) tensors already on that device."""

    name: str
    """Task family (the config's `task`)."""
    metric_name: str
    """What the primary metric is called in reports ("accuracy", "neg_loss", …)."""
    output_size: int
    """Size of the model's last dimension (classes, vocabulary)."""
    chance_loss: float
    """Loss of a uniform prediction (ln of the output size for a softmax): observations divide losses by it."""
    val_batches: Sequence[Batch]
    """Validation batches, fixed for the task's lifetime (every run of a world judges on the same ones)."""
    eval_batches: Sequence[Batch] | None
    """Optional external evaluation batches (reported beside validation), else None."""

    def train_stream(self, batch_size: int, augment: bool, seed: int) -> Iterable[Batch]:
        """The training batches: each `iter()` is one shuffled pass, its order and augmentation from `seed`."""
        ...

    def loss(self, output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        """The training loss of `output` (B, …) against `target`; reduction 'mean' or 'sum' (over examples)."""
        ...

    def metric_sums(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The primary metric summed over the batch, for K model configurations at once: outputs (K, B, …) →
        (K,) float on the CPU. Divided by `count(target)` summed over batches it gives the metric."""
        ...

    def count(self, target: Tensor) -> int:
        """How many examples `target` scores (the denominator of loss and metric sums)."""
        ...

    def nominal_input(self) -> Tensor:
        """One input example as a batch of 1 on the task's device (probes, FLOP counts)."""
        ...


TaskBuilder = Callable[[TaskConfig, torch.device, "int | None"], Task]
DataCheck = Callable[[TaskConfig], None]
_CHECKS: dict[type[TaskConfig], DataCheck] = {}


def register_task(config_cls: type[TaskConfig], build: TaskBuilder, check: DataCheck | None = None) -> None:
    """Make a task available to every world: `config_cls` joins TASK_CONFIGS (worlds then accept
    `data: {task: <name>, …}`), and `build(config, device, val_examples)` makes the Task. `check(config)`, if
    given, is a cheap look at the task's data (files exist and read) that raises DataError naming what is wrong:
    scripts run it before starting anything (esper.study.cli.check_world)."""
    TASK_CONFIGS.register(config_cls, build)
    if check is not None:
        _CHECKS[config_cls] = check


def check_task_data(config: TaskConfig) -> None:
    """The task's own cheap data check (nothing for a task that registered none)."""
    check = _CHECKS.get(type(config))
    if check is not None:
        check(config)


def build_task(config: TaskConfig, device: torch.device, val_examples: int | None = None) -> Task:
    """The task of a world's `data` section on `device`; validation cut to its first `val_examples` examples."""
    return TASK_CONFIGS.builder(config)(config, device, val_examples)


from esper.tolaria import image_task, text_task  # noqa: E402,F401  (the built-in tasks register themselves)
