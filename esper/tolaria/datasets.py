"""Resolve a data source name into train / validation (/ external eval) sets on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from esper.tolaria.data import DataError, ImageSet, load_cifar10_torchvision, load_parquet, load_synthetic, split_train_val
from esper.tolaria.synthetic import NUM_CLASSES as SYNTHETIC_CLASSES


@dataclass
class DataBundle:
    train: ImageSet
    val: ImageSet
    eval: ImageSet | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    num_classes: int


def channel_stats(data: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the (training) images, in [0, 1] units."""
    x = data.images.float().div_(255.0)
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


def load_bundle(source: str, *, limit: int | None, val_fraction: float, device: torch.device,
                eval_path: str | None = None, split_seed: int = 1234) -> DataBundle:
    """`source`: 'synthetic', 'cifar10' (torchvision download into ./data) or a Parquet path.

    Which images are drawn (`limit`) and how they split into train and validation depend on `split_seed`
    alone — never on a run's seed — so every arm and seed of an experiment validates on the same images."""
    classes = None
    if source == "synthetic":
        full, classes = load_synthetic(limit or 6000, seed=split_seed), SYNTHETIC_CLASSES
    elif source == "cifar10":
        full, classes = load_cifar10_torchvision(Path("data"), train=True, download=True), 10
    elif source.endswith(".parquet"):
        full = load_parquet(source, limit=limit, seed=split_seed)
    else:
        raise DataError(f"unknown data source {source!r}: use 'synthetic', 'cifar10' or a .parquet path")
    if limit is not None and len(full) > limit:
        full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(split_seed))[:limit])
    train, val = split_train_val(full, val_fraction, seed=split_seed)
    mean, std = channel_stats(train)
    ev = load_parquet(eval_path).to(device) if eval_path else None
    classes = classes or int(full.labels.max()) + 1
    return DataBundle(train.to(device), val.to(device), ev, mean, std, source, classes)
