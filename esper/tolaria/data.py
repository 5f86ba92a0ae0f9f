"""Datasets held as uint8 tensors on the training device, with on-device augmentation.

Sources: the built-in synthetic task, a Parquet file (`image` = encoded JPEG/PNG bytes, `label` = int64),
or CIFAR-10 through torchvision (downloads on first use). No per-sample DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torch.nn import functional as F

from esper.tolaria.synthetic import NUM_CLASSES as SYNTHETIC_CLASSES
from esper.tolaria.synthetic import make_synthetic

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class DataError(ValueError):
    """Bad data path, layout or contents (a user mistake: reported without a traceback by the CLIs)."""


@dataclass
class ImageSet:
    """Images uint8 (N, 3, H, W) and labels int64 (N,), on one device."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    def subset(self, index: Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


def split_train_val(data: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A fixed-seed random split (validation is carved from train; the real test split stays held out)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).to(data.labels.device)
    n_val = max(1, int(round(len(data) * val_fraction)))
    return data.subset(perm[n_val:]), data.subset(perm[:n_val])


def load_synthetic(n: int, seed: int) -> ImageSet:
    images, labels = make_synthetic(n, seed)
    return ImageSet(images, labels)


def load_parquet(path: str | Path, limit: int | None = None, seed: int = 0) -> ImageSet:
    """Decode a Parquet file with columns `image` (encoded bytes, or a struct with `bytes`) and `label`.

    `limit` keeps a random subset of that many rows (fixed `seed`), chosen before decoding; files are
    often sorted by label, so the first rows would not be a fair sample."""
    import pyarrow.parquet as pq
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Parquet file not found: {path}")
    try:
        table = pq.read_table(path, columns=["image", "label"])
    except (KeyError, ValueError) as exc:  # pyarrow raises these for missing columns
        raise DataError(f"{path}: needs columns 'image' (encoded bytes) and 'label' (int): {exc}") from None
    if limit is not None and limit < table.num_rows:
        keep = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(seed))[:limit]
        table = table.take(keep.sort().values.numpy())
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has no rows")
    images = []
    for i, item in enumerate(table.column("image").to_pylist()):
        blob = item.get("bytes") if isinstance(item, dict) else item
        if not isinstance(blob, (bytes, bytearray)):
            raise DataError(f"{path}: row {i}: column 'image' must hold encoded image bytes, got {type(blob).__name__}")
        try:
            img = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as exc:
            raise DataError(f"{path}: row {i}: cannot decode image bytes ({exc})") from None
        if images and img.shape != images[0].shape:
            raise DataError(f"{path}: row {i}: image shape {tuple(img.shape)} differs from row 0's {tuple(images[0].shape)}")
        images.append(img)
    try:
        labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.int64)
    except (TypeError, RuntimeError) as exc:
        raise DataError(f"{path}: column 'label' must hold integers ({exc})") from None
    if bool((labels < 0).any()):
        raise DataError(f"{path}: column 'label' has negative values")
    return ImageSet(torch.stack(images), labels)


def load_cifar10_torchvision(root: str | Path, train: bool = True, download: bool = True) -> ImageSet:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(root=str(root), train=train, download=download)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) → (N, C, H, W)
    return ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64))


class DeviceLoader:
    """Shuffled mini-batches of a device-resident ImageSet, augmented and normalised on that device."""

    def __init__(self, data: ImageSet, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: bool, shuffle: bool, seed: int, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be ≥ 1, got {batch_size}")
        self.data, self.batch_size, self.augment, self.shuffle, self.drop_last = data, batch_size, augment, shuffle, drop_last
        device = data.images.device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, device = len(self.data), self.data.images.device
        order = torch.randperm(n, generator=self.gen, device=device) if self.shuffle else torch.arange(n, device=device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.data.images[idx].float().div_(255.0)
            if self.augment:
                x = self._augment(x)
            yield (x - self.mean) / self.std, self.data.labels[idx]

    def _augment(self, x: Tensor, pad: int = 4) -> Tensor:
        """Random crop with zero padding + horizontal flip, for the whole batch at once."""
        n, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=self.gen, device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=self.gen, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
        crops = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
        flip = torch.rand(n, generator=self.gen, device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], crops.flip(3), crops)
