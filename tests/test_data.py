"""Tolaria data: the synthetic task, the train/val split, the on-device loader and the Parquet reader."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.nn import functional as F
from torchvision.io import encode_png

from esper.tolaria.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataError,
    DeviceLoader,
    ImageSet,
    load_parquet,
    load_synthetic,
    split_train_val,
)
from esper.tolaria.datasets import channel_stats, load_bundle
from esper.tolaria.synthetic import NUM_CLASSES, make_synthetic

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- synthetic task
def test_synthetic_layout_and_label_range():
    images, labels = make_synthetic(300, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (300, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (300,)
    assert int(labels.min()) >= 0 and int(labels.max()) < NUM_CLASSES == 10
    assert set(labels.tolist()) == set(range(10)), "300 draws should hit every class"
    # Images are not blank or saturated: real content in every channel.
    assert images.float().std(dim=(0, 2, 3)).min() > 10


def test_synthetic_is_deterministic_per_seed_and_differs_across_seeds():
    a_img, a_lab = make_synthetic(64, seed=7)
    b_img, b_lab = make_synthetic(64, seed=7)
    c_img, c_lab = make_synthetic(64, seed=8)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert not torch.equal(a_lab, c_lab)


def test_synthetic_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_synthetic(16, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_synthetic_rejects_empty_request():
    with pytest.raises(ValueError):
        make_synthetic(0, seed=0)


def test_load_synthetic_wraps_an_imageset():
    data = load_synthetic(50, seed=3)
    images, labels = make_synthetic(50, seed=3)
    assert isinstance(data, ImageSet) and len(data) == 50
    assert torch.equal(data.images, images) and torch.equal(data.labels, labels)


def test_imageset_validates_layout():
    with pytest.raises(DataError):
        ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))  # float images
    with pytest.raises(DataError):
        ImageSet(torch.zeros(2, 3, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))  # 3-D
    with pytest.raises(DataError):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))  # count mismatch


# ---------------------------------------------------------------------------------------------- split
def _indexed(n: int) -> ImageSet:
    """An ImageSet whose labels are the row indices, so subsets can be traced back to rows."""
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    return ImageSet(images, torch.arange(n))


@pytest.mark.parametrize("n, fraction", [(100, 0.2), (37, 0.3), (5, 0.1)])
def test_split_is_disjoint_and_covers_everything(n, fraction):
    train, val = split_train_val(_indexed(n), fraction, seed=0)
    tr, va = set(train.labels.tolist()), set(val.labels.tolist())
    assert tr.isdisjoint(va)
    assert tr | va == set(range(n))
    assert len(train) + len(val) == n
    assert len(val) == max(1, round(n * fraction))
    # images travel with their labels
    assert torch.equal(train.images[:, 0, 0, 0], train.labels.remainder(256).to(torch.uint8))
    assert torch.equal(val.images[:, 0, 0, 0], val.labels.remainder(256).to(torch.uint8))


def test_split_is_fixed_by_seed():
    data = _indexed(200)
    a_tr, a_va = split_train_val(data, 0.25, seed=5)
    b_tr, b_va = split_train_val(data, 0.25, seed=5)
    c_tr, c_va = split_train_val(data, 0.25, seed=6)
    assert torch.equal(a_tr.labels, b_tr.labels) and torch.equal(a_va.labels, b_va.labels)
    assert set(a_va.labels.tolist()) != set(c_va.labels.tolist())


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(DataError):
        split_train_val(_indexed(10), fraction, seed=0)


# ---------------------------------------------------------------------------------------------- DeviceLoader
def _mean_std(data: ImageSet):
    return channel_stats(data)


def _unnormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def test_loader_yields_normalised_float_batches_of_the_right_shapes():
    data = load_synthetic(150, seed=0)
    mean, std = _mean_std(data)
    loader = DeviceLoader(data, 64, mean, std, augment=False, shuffle=False, seed=0)
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    assert [b[0].shape for b in batches] == [(64, 3, 32, 32), (64, 3, 32, 32), (22, 3, 32, 32)]
    assert [b[1].shape for b in batches] == [(64,), (64,), (22,)]
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.isfinite(x).all()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    # Normalised with the set's own statistics: per-channel mean ≈ 0 and std ≈ 1.
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    # Unshuffled, unaugmented: exactly the images (in order), up to float rounding.
    assert torch.allclose(_unnormalise(x, mean, std) * 255.0, data.images.float(), atol=1e-3)
    assert torch.equal(y, data.labels)


def test_loader_drop_last():
    data = load_synthetic(150, seed=0)
    loader = DeviceLoader(data, 64, CIFAR10_MEAN, CIFAR10_STD, augment=False, shuffle=True, seed=0, drop_last=True)
    batches = list(loader)
    assert len(loader) == 2 == len(batches)
    assert all(x.shape[0] == 64 for x, _ in batches)


def test_loader_rejects_bad_batch_size():
    with pytest.raises(DataError):
        DeviceLoader(load_synthetic(4, seed=0), 0, CIFAR10_MEAN, CIFAR10_STD, augment=False, shuffle=False, seed=0)


def test_shuffled_batches_keep_images_and_labels_together():
    data = _indexed_images(90)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    loader = DeviceLoader(data, 32, mean, std, augment=False, shuffle=True, seed=3)
    seen = []
    for x, y in loader:
        restored = (_unnormalise(x, mean, std) * 255.0).round().to(torch.uint8)
        assert torch.equal(restored, data.images[y])
        seen += y.tolist()
    assert sorted(seen) == list(range(90)), "one epoch visits every image exactly once"
    assert seen != list(range(90)), "shuffled"


def _indexed_images(n: int) -> ImageSet:
    """Random images with labels = row index (labels need not be classes for the loader)."""
    gen = torch.Generator().manual_seed(11)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8), torch.arange(n))


def test_augmentation_keeps_shape_changes_pixels_and_is_a_crop_or_flip():
    data = _indexed_images(40)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    plain = DeviceLoader(data, 40, mean, std, augment=False, shuffle=False, seed=0)
    aug = DeviceLoader(data, 40, mean, std, augment=True, shuffle=False, seed=0)
    (xp, yp), = list(plain)
    (xa, ya), = list(aug)
    assert xa.shape == xp.shape == (40, 3, 32, 32)
    assert torch.equal(ya, yp)
    assert not torch.allclose(xa, xp), "augmentation changed nothing"
    changed = [(xa[i] - xp[i]).abs().max() > 1e-6 for i in range(40)]
    assert sum(changed) >= 30, "almost every image should be shifted or flipped"
    # Every augmented image is a 32×32 window of the 4-pixel zero-padded original, optionally mirrored.
    ua = _unnormalise(xa, mean, std)
    padded = F.pad(data.images.float() / 255.0, (4, 4, 4, 4))
    for i in range(40):
        candidates = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.allclose(ua[i], c, atol=1e-4) for c in candidates), f"image {i} is not a crop/flip"


def test_same_seed_same_batches_different_seed_different_batches():
    data = load_synthetic(130, seed=0)
    mean, std = _mean_std(data)

    def epochs(seed, n=2):
        loader = DeviceLoader(data, 32, mean, std, augment=True, shuffle=True, seed=seed)
        return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(n)]

    a, b, c = epochs(1), epochs(1), epochs(2)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb)
        for (xa, ya), (xb, yb) in zip(ea, eb):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0][1], c[0][0][1]), "a different seed should shuffle differently"
    assert not torch.equal(a[0][0][1], a[1][0][1]), "each epoch reshuffles"


# ---------------------------------------------------------------------------------------------- Parquet
def _tiny_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n, dtype=torch.int64) % 10
    return images, labels


def _write_parquet(path, images: torch.Tensor, labels: torch.Tensor, struct: bool = False) -> None:
    blobs = [encode_png(img).numpy().tobytes() for img in images]
    column = [{"bytes": b, "path": None} for b in blobs] if struct else blobs
    table = pa.table({"image": column, "label": pa.array(labels.tolist(), type=pa.int64())})
    pq.write_table(table, path)


@pytest.mark.parametrize("struct", [False, True], ids=["bytes", "hf-struct"])
def test_parquet_round_trip(tmp_path, struct):
    images, labels = _tiny_images(12)
    path = tmp_path / "tiny.parquet"
    _write_parquet(path, images, labels, struct=struct)
    data = load_parquet(path)
    assert isinstance(data, ImageSet)
    assert data.images.dtype == torch.uint8 and data.images.shape == (12, 3, 32, 32)
    assert torch.equal(data.images, images), "PNG is lossless: pixels must round-trip exactly"
    assert data.labels.dtype == torch.int64 and torch.equal(data.labels, labels)


def test_parquet_limit_samples_a_fixed_subset(tmp_path):
    images, labels = _tiny_images(30, seed=1)
    labels = torch.arange(30)  # trace rows back
    path = tmp_path / "tiny.parquet"
    _write_parquet(path, images, labels)
    sub = load_parquet(path, limit=7, seed=0)
    assert len(sub) == 7
    rows = sub.labels.tolist()
    assert len(set(rows)) == 7 and all(0 <= r < 30 for r in rows)
    assert torch.equal(sub.images, images[sub.labels]), "each image stays with its own label"
    assert rows != list(range(7)), "a random subset, not the first rows"
    again = load_parquet(path, limit=7, seed=0)
    assert torch.equal(again.labels, sub.labels) and torch.equal(again.images, sub.images)
    other = load_parquet(path, limit=7, seed=1)
    assert set(other.labels.tolist()) != set(rows)
    # limit ≥ rows keeps everything
    assert len(load_parquet(path, limit=100)) == 30


def test_parquet_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_parquet(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match="not found"):
        load_parquet(tmp_path)  # a folder is not a file


@pytest.mark.parametrize("columns", [{"img": "image", "label": "label"}, {"image": "image", "target": "label"}])
def test_parquet_missing_columns_is_a_data_error(tmp_path, columns):
    images, labels = _tiny_images(3)
    blobs = [encode_png(img).numpy().tobytes() for img in images]
    data = {"image": blobs, "label": labels.tolist()}
    table = pa.table({name: data[src] for name, src in columns.items()})
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError, match="needs columns"):
        load_parquet(path)


@pytest.mark.parametrize("values", [[1, 2, 3], ["a", "b", "c"]], ids=["int", "str"])
def test_parquet_non_bytes_image_column_is_a_data_error(tmp_path, values):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"image": values, "label": [0, 1, 2]}), path)
    with pytest.raises(DataError, match="encoded image bytes"):
        load_parquet(path)


def _png(side: int) -> bytes:
    return encode_png(torch.zeros(3, side, side, dtype=torch.uint8)).numpy().tobytes()


BAD_CONTENTS = {
    "undecodable": ([b"definitely not a png"], [0]),
    "mixed-sizes": ([_png(32), _png(16)], [0, 1]),
    "no-rows": ([], []),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_parquet_bad_contents_is_a_data_error(tmp_path, case):
    """Bad contents are a user mistake (DataError: the CLIs report it without a traceback), not a RuntimeError
    from torchvision's decoder or torch.stack."""
    blobs, labels = BAD_CONTENTS[case]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"image": pa.array(blobs, type=pa.binary()), "label": pa.array(labels, type=pa.int64())}), path)
    with pytest.raises(DataError):
        load_parquet(path)


# ---------------------------------------------------------------------------------------------- bundles
def test_load_bundle_unknown_source_is_a_data_error():
    with pytest.raises(DataError, match="unknown data source"):
        load_bundle("nope", limit=10, val_fraction=0.2, device=CPU)


def test_load_bundle_split_depends_on_the_split_seed_alone():
    """The split is fixed by `split_seed` (no run seed is taken: it used to be accepted and ignored)."""
    import inspect

    assert "seed" not in inspect.signature(load_bundle).parameters
    a = load_bundle("synthetic", limit=200, val_fraction=0.2, device=CPU)
    b = load_bundle("synthetic", limit=200, val_fraction=0.2, device=CPU)
    c = load_bundle("synthetic", limit=200, val_fraction=0.2, device=CPU, split_seed=7)
    assert len(a.train) == 160 and len(a.val) == 40 and a.eval is None and a.num_classes == 10
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images), "another split seed is another split"
    mean, std = channel_stats(a.train)
    assert a.mean == mean and a.std == std
    assert all(0.0 < m < 1.0 for m in a.mean) and all(0.0 < s < 1.0 for s in a.std)


def test_load_bundle_parquet_with_eval(tmp_path):
    images, labels = _tiny_images(20)
    path = tmp_path / "train.parquet"
    _write_parquet(path, images, labels)
    bundle = load_bundle(str(path), limit=None, val_fraction=0.25, device=CPU, eval_path=str(path))
    assert len(bundle.train) == 15 and len(bundle.val) == 5
    assert bundle.eval is not None and torch.equal(bundle.eval.images, images)


def test_load_bundle_missing_parquet_or_eval_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_bundle(str(tmp_path / "missing.parquet"), limit=None, val_fraction=0.2, device=CPU)
    with pytest.raises(DataError, match="not found"):
        load_bundle("synthetic", limit=50, val_fraction=0.2, device=CPU, eval_path=str(tmp_path / "eval.parquet"))
