"""IDX parsing, Fashion-MNIST, the synthetic set, batch plans and batch transforms."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.data import BatchPlan, open_dataset
from alexnet.data.fashion_mnist import fashion_mnist
from alexnet.data.idx import read_idx
from alexnet.data.presets import CropParams, TrainAugment, centre_crop, crop_batch, draw_crop_params
from alexnet.data.seeding import generator
from alexnet.errors import UserError
from tests.helpers.cli import needs_fashion


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def make_idx_folder(folder: Path, n_train: int = 20, n_val: int = 8, compress: bool = True) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for stem, n in (("train", n_train), ("t10k", n_val)):
        write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, compress)
    return folder


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip(tmp_path: Path, compress: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write_idx(tmp_path / "a.idx", array, compress))
    assert got.shape == (2, 3, 4) and np.array_equal(got, array)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x02ab", "magic"),
        (b"\x00\x00\x42\x01\x00\x00\x00\x02ab", "type"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05ab", "truncated or damaged"),
        (b"", "magic"),
    ],
)
def test_malformed_idx_is_a_user_error(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(UserError, match=message):
        read_idx(path)


def test_damaged_gzip_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(UserError, match="gzip"):
        read_idx(path)


def test_idx_folder_source(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "fm")
    ds = open_dataset(f"fashion-mnist:{folder}")
    assert ds.num_samples("train") == 20 and ds.num_samples("val") == 8
    images, labels = next(ds.batches("train", BatchPlan(20)))
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]
    assert not ds.info.synthetic and ds.info.classes[9] == "Ankle boot"


def test_cifar10_source_reads_the_download_as_prepare_stores_it(tmp_path: Path) -> None:
    from alexnet.data.prepare import Settings, prepare
    from alexnet.data.prepared import PreparedDataset
    from tests.helpers.layouts import CIFAR_NAMES, make_cifar10

    tarball, _ = make_cifar10(tmp_path / "dl" / "cifar-10-python.tar.gz", per_batch=8)
    for source in (f"cifar10:{tarball}", f"cifar10:{tarball.parent}"):  # the tarball, or a folder holding it
        ds = open_dataset(source)
        assert ds.info.name == "cifar-10" and list(ds.info.classes) == CIFAR_NAMES and ds.info.channels == 3
    prepare(tarball, tmp_path / "p", settings=Settings(size=32, encoding="raw"), workers=1, progress=False)
    prepared = PreparedDataset(tmp_path / "p")
    assert (ds.train_augment, ds.eval_crop, ds.info.image_size) == (prepared.train_augment, prepared.eval_crop, 32)
    for split, batches in (("train", ("data_batch_1", "data_batch_2")), ("val", ("test_batch",))):
        images, labels = ds.splits[split]  # the batches in order, 8 images each
        keys = prepared.keys(split)
        where = [batches.index(k[:-6]) * 8 + int(k[-5:]) for k in keys]  # key: <batch>_<index>
        stored, stored_labels = prepared.read(split, list(range(len(keys))))
        assert sorted(where) == list(range(len(images)))
        assert torch.equal(images[where], stored) and torch.equal(labels[where], stored_labels)
    with pytest.raises(UserError, match="not cifar-100"):
        open_dataset(f"cifar100:{tarball}")
    with pytest.raises(UserError, match="not found"):
        open_dataset(f"cifar10:{tmp_path / 'missing'}")


def test_missing_idx_folder_says_how_to_install() -> None:
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        open_dataset("fashion-mnist:/nonexistent/folder")


@needs_fashion
def test_real_fashion_mnist() -> None:
    ds = fashion_mnist()
    assert ds.num_samples("train") == 60_000 and ds.num_samples("val") == 10_000
    train_labels = ds.splits["train"][1]
    assert torch.bincount(train_labels).tolist() == [6000] * 10  # the published class balance
    assert 60 < ds.info.mean[0] < 90 and 80 < ds.info.std[0] < 100  # 72.9 / 90.0 in 0-255 units


def test_synthetic_is_deterministic_and_labelled_synthetic() -> None:
    a = open_dataset("synthetic:classes=4,size=16,train=32,val=8")
    b = open_dataset("synthetic:classes=4,size=16,train=32,val=8")
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert a.info.synthetic and "SYNTHETIC" in a.describe()
    with pytest.raises(UserError, match="synthetic option"):
        open_dataset("synthetic:colour=blue")
    with pytest.raises(UserError, match="unknown data source"):
        open_dataset("imagenet-from-the-moon")


def test_shuffle_is_deterministic_per_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        return torch.cat(list(BatchPlan(10, shuffle=True, seed=seed, epoch=epoch).local_indices(50))).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(3, 2)) == list(range(50))


def test_ranks_split_each_global_batch_without_overlap() -> None:
    whole = list(BatchPlan(8, shuffle=True, seed=1, drop_last=True).local_indices(37))
    shares = [
        list(BatchPlan(8, shuffle=True, seed=1, drop_last=True, rank=r, world_size=2).local_indices(37)) for r in (0, 1)
    ]
    assert len(whole) == 4  # 37 // 8 full batches; the 5 left over are dropped (training)
    for step, batch in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][step], shares[1][step]]), batch)


def test_evaluation_plan_counts_every_sample_once_across_ranks() -> None:
    seen = torch.cat([i for r in range(3) for i in BatchPlan(6, rank=r, world_size=3).local_indices(20)])
    assert sorted(seen.tolist()) == list(range(20))


def test_resume_plan_continues_the_same_order() -> None:
    full = list(BatchPlan(4, shuffle=True, seed=5, epoch=2, drop_last=True).local_indices(30))
    tail = list(BatchPlan(4, shuffle=True, seed=5, epoch=2, drop_last=True, start_step=3).local_indices(30))
    assert all(torch.equal(a, b) for a, b in zip(full[3:], tail, strict=True))


def test_crop_batch_equals_slicing_and_mirroring() -> None:
    images = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8)
    params = CropParams(torch.tensor([0, 2, 4]), torch.tensor([5, 0, 3]), torch.tensor([False, True, True]))
    out = crop_batch(images, params, 6)
    for i in range(3):
        t, l = int(params.tops[i]), int(params.lefts[i])
        expected = images[i, :, t : t + 6, l : l + 6]
        if params.flips[i]:
            expected = expected.flip(-1)
        assert torch.equal(out[i], expected)


def test_padded_crops_cover_every_offset_and_both_flips() -> None:
    aug = TrainAugment(crop=28, pad=2, flip=True)
    p = draw_crop_params(aug, 28, 20_000, generator("test"))
    assert set(p.tops.tolist()) == set(range(5)) and set(p.lefts.tolist()) == set(range(5))
    assert 0.48 < p.flips.float().mean().item() < 0.52
    images = torch.full((1, 1, 28, 28), 7, dtype=torch.uint8)
    corner = crop_batch(images, CropParams(torch.tensor([0]), torch.tensor([0]), torch.tensor([False])), 28, pad=2)
    assert corner[0, 0, :2].eq(0).all() and corner[0, 0, 2:, 2:].eq(7).all()


def test_paper_crop_geometry_227_of_256() -> None:
    p = draw_crop_params(TrainAugment(crop=227), 256, 50_000, generator("paper"))
    assert p.tops.min() == 0 and p.tops.max() == 29  # 256 - 227 = 29: every position, both borders
    images = torch.arange(256 * 256, dtype=torch.int32).view(1, 1, 256, 256)
    assert torch.equal(centre_crop(images, 227), images[..., 14:241, 14:241])
