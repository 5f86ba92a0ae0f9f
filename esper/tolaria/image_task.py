"""Image classification, the first Task: device-resident uint8 images, on-device crop + flip, accuracy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor
from torch.nn import functional as F

from esper.leyline.registry import TaskConfig
from esper.tolaria.data import DataError, DeviceLoader
from esper.tolaria.datasets import DataBundle, load_bundle
from esper.tolaria.task import register_task


class ImageDataConfig(TaskConfig):
    """Image classification (esper.tolaria.image_task): where the images come from and how they are split."""

    task: Literal["image_classification"] = "image_classification"
    """Task family."""
    metric_name: ClassVar[str] = "accuracy"
    source: str = "synthetic"
    """'synthetic' (built-in task), 'cifar10' (torchvision download) or a .parquet path."""
    limit: int | None = Field(6000, ge=20)
    """Images drawn from the source (a fixed random subset); None = all."""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Fraction carved from train for validation (fixed split seed, the same for every arm and seed)."""
    eval_data: str | None = None
    """Optional external evaluation set (.parquet), reported separately."""

    @field_validator("source", "eval_data")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        """A relative .parquet path is made absolute where the config is read: Ray workers and Tune trials run in
        other directories, and the saved config should name the file that was actually read."""
        if value is None or not value.endswith(".parquet") or Path(value).is_absolute():
            return value
        return str(Path(value).resolve())


EVAL_BATCH = 512  # validation and evaluation batch size (no gradients: as large as memory allows)


class ImageClassification:
    """Classes of a DataBundle; the metric is accuracy (a fraction), the loss cross-entropy."""

    name = "image_classification"
    metric_name = ImageDataConfig.metric_name

    def __init__(self, bundle: DataBundle, val_examples: int | None = None) -> None:
        self.bundle = bundle
        self.output_size = bundle.num_classes
        self.chance_loss = math.log(bundle.num_classes)
        val = bundle.val
        if val_examples is not None and len(val) > val_examples:  # a fixed subset: the first images of the split
            val = val.subset(torch.arange(val_examples, device=val.labels.device))
        self.val_batches = self._fixed_batches(val)
        self.eval_batches = self._fixed_batches(bundle.eval) if bundle.eval is not None else None

    def _fixed_batches(self, data) -> list[tuple[Tensor, Tensor]]:
        """Normalised once for the task's lifetime: validation never changes."""
        b = self.bundle
        return list(DeviceLoader(data, EVAL_BATCH, b.mean, b.std, augment=False, shuffle=False, seed=0))

    def train_stream(self, batch_size: int, augment: bool, seed: int) -> DeviceLoader:
        b = self.bundle
        return DeviceLoader(b.train, batch_size, b.mean, b.std, augment, shuffle=True, seed=seed)

    def loss(self, output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        return F.cross_entropy(output, target, reduction=reduction)

    def metric_sums(self, outputs: Tensor, target: Tensor) -> Tensor:
        return (outputs.argmax(-1) == target).sum(dim=1).float().cpu()  # (K, B, C) → (K,) correct per configuration

    def count(self, target: Tensor) -> int:
        return target.shape[0]

    def nominal_input(self) -> Tensor:
        return torch.zeros((1, *self.bundle.train.images.shape[1:]), device=self.bundle.train.images.device)


def build_image_task(config: ImageDataConfig, device: torch.device, val_examples: int | None) -> ImageClassification:
    bundle = load_bundle(config.source, limit=config.limit, val_fraction=config.val_fraction, device=device,
                         eval_path=config.eval_data)
    return ImageClassification(bundle, val_examples)


def check_image_data(config: ImageDataConfig) -> None:
    """The Parquet files a world names exist and have the columns a task reads (schema only: no image decoded)."""
    import pyarrow.parquet as pq

    for field, path in (("data.source", config.source), ("data.eval_data", config.eval_data)):
        if path is None or not path.endswith(".parquet"):
            continue
        if not Path(path).is_file():
            raise DataError(f"{field}: Parquet file not found: {path}")
        try:
            names = pq.read_schema(path).names
        except Exception as exc:  # pyarrow's errors for a file that is not Parquet vary by version
            raise DataError(f"{field}: {path} is not a readable Parquet file ({type(exc).__name__})") from None
        if not {"image", "label"} <= set(names):
            raise DataError(f"{field}: {path} needs columns 'image' and 'label', has {names}")


register_task(ImageDataConfig, build_image_task, check_image_data)
