"""The paper's input pipeline: crops, flips, ten crops, PCA colour noise, mean image, the
prepared-data loader (determinism, ranks, workers), ensembles, and the paper net end to end."""

from __future__ import annotations

import csv
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alexnet.data.dataset import BatchPlan, DatasetInfo, TensorDataset
from alexnet.data.pipeline import InputPipeline
from alexnet.data.prepare import Settings, prepare
from alexnet.data.prepared import PreparedDataset, ordered_parallel_map
from alexnet.data.presets import (
    ColourStats,
    CropParams,
    TrainAugment,
    draw_crop_params,
    pca_colour_shift,
    ten_crops,
)
from alexnet.data.seeding import generator
from alexnet.errors import UserError
from alexnet.evaluation import evaluate
from tests.helpers import layouts as fx
from tests.helpers.cli import run_cli

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- fixtures


def make_classes(root: Path, per_class: dict[str, int], classes: int = 3, seed: int = 0) -> Path:
    """``root/{train,val}/c{k}/*.jpg``: small structured JPEGs."""
    for split, n in per_class.items():
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i:03d}.jpg").write_bytes(fx.jpeg(seed + 1000 * k + 10 * i + (split == "val")))
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """37 training and 11 validation images of 3 classes, prepared at 72x72 JPEG (crop 64)."""
    root = tmp_path_factory.mktemp("pipeline")
    src = make_classes(root / "src", {"train": 13, "val": 4})
    (src / "train" / "c2" / "012.jpg").unlink()
    (src / "val" / "c0" / "003.jpg").unlink()
    prepare(src, root / "out", settings=Settings(size=72, encoding="jpeg", shard_size=5), workers=2, progress=False)
    ds = PreparedDataset(root / "out")
    assert (ds.num_samples("train"), ds.num_samples("val")) == (38, 11)
    return root / "out"


class _Stats(TensorDataset):
    """An in-memory dataset whose colour statistics are given, not measured."""

    def __init__(self, images: torch.Tensor, stats: ColourStats, crop: int) -> None:
        info = DatasetInfo("t", ("a", "b"), 3, images.shape[-1], (100.0, 110.0, 120.0), (50.0, 60.0, 70.0))
        labels = torch.zeros(len(images), dtype=torch.int64)
        super().__init__(info, {"train": (images, labels), "val": (images, labels)}, TrainAugment(crop), crop)
        self._colour = stats


def random_stats(side: int, seed: int = 0) -> ColourStats:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    eigvals = torch.tensor([60.0, 400.0, 4500.0], dtype=torch.float64)  # 0-255 units squared, ImageNet-like
    mean_image = torch.rand(3, side, side, generator=g) * 255
    return ColourStats(mean_image, eigvals.float(), q.float())


# ----------------------------------------------------------------------------- crops and flips


def test_training_crops_cover_every_position_uniformly_and_flip_half() -> None:
    p = draw_crop_params(TrainAugment(crop=227), 256, 60_000, generator("cover"))
    for offsets in (p.tops, p.lefts):
        counts = torch.bincount(offsets, minlength=30)
        assert len(counts) == 30 and counts.min() > 0  # 0..29: 256 - 227 + 1 positions, borders included
        expected = 60_000 / 30
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert chi2 < 70  # 29 degrees of freedom: p < 1e-4 to fail by chance
    assert abs(p.flips.float().mean().item() - 0.5) < 0.01
    # Offsets and flips are independent: the flip rate is the same at the borders and inside.
    assert abs(p.flips[p.tops == 0].float().mean().item() - 0.5) < 0.05


def test_ten_crops_are_the_four_corners_the_centre_and_their_mirrors() -> None:
    coords = torch.arange(256 * 256, dtype=torch.int64).view(1, 1, 256, 256)  # value = row * 256 + col
    images = torch.cat([coords, coords + 10**6])  # two images: crop-major order is checked too
    crops = ten_crops(images, 227)
    assert crops.shape == (20, 1, 227, 227)
    corners = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]  # centre: (256 - 227) // 2 = 14
    for k in range(10):
        top, left = corners[k % 5]
        for n in range(2):
            patch = crops[2 * k + n, 0]
            window = images[n, 0, top : top + 227, left : left + 227]
            assert torch.equal(patch, window if k < 5 else window.flip(-1)), (k, n)


def _pipeline_pair(images_side: int, crop: int, normalize: str, pca: str) -> tuple[InputPipeline, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, images_side, images_side), dtype=torch.uint8, generator=g)
    ds = _Stats(images, random_stats(images_side), crop)
    return InputPipeline(ds, CPU, channels_last=True, seed=3, normalize=normalize, pca=pca), images


@pytest.mark.parametrize(
    "normalize,pca", [("mean-image", "paper"), ("mean-image", "off"), ("channel", "std"), ("channel", "off")]
)
def test_fast_cpu_path_equals_the_batched_gather(normalize: str, pca: str) -> None:
    pipe, images = _pipeline_pair(80, 70, normalize, pca)
    nhwc = images.contiguous(memory_format=torch.channels_last)  # what the prepared loader yields
    assert pipe._fast_cpu(nhwc) and not pipe._fast_cpu(images)
    params = pipe.crop_params(epoch=1, step=2, global_batch=16)
    assert params.flips.any() and not params.flips.all()
    fast, reference = pipe.train(nhwc, params), pipe.train(images, params)
    assert torch.equal(fast, reference)  # bit for bit
    assert fast.is_contiguous(memory_format=torch.channels_last) and fast.dtype == torch.float32
    assert torch.equal(pipe.eval(nhwc), pipe.eval(images))


def test_eval_views_centre_flip_and_ten_crop() -> None:
    pipe, images = _pipeline_pair(80, 70, "channel", "off")
    centre, n = pipe.eval(images), len(images)
    transform, crops = pipe.eval_views("flip")
    both = transform(images)
    assert crops == 2 and both.shape[0] == 2 * n  # crop-major: all centres, then all mirrors
    assert torch.equal(both[:n], centre) and torch.equal(both[n:], centre.flip(-1))
    assert pipe.eval_views("centre")[1] == 1 and pipe.eval_views("ten-crop")[1] == 10
    with pytest.raises(UserError, match="test views"):
        pipe.eval_views("five-crop")


def test_training_output_is_the_crop_minus_the_same_window_of_the_mean_image() -> None:
    pipe, images = _pipeline_pair(80, 70, "mean-image", "off")
    params = pipe.crop_params(0, 0, 16)
    out = pipe.train(images.contiguous(memory_format=torch.channels_last), params)
    mean = pipe.norm.mean_image
    for i in range(16):
        t, l = int(params.tops[i]), int(params.lefts[i])
        expected = images[i, :, t : t + 70, l : l + 70].float() - mean[:, t : t + 70, l : l + 70]
        if params.flips[i]:
            expected = expected.flip(-1)  # mirroring the difference = differencing the mirrors
        assert torch.equal(out[i], expected)


# ----------------------------------------------------------------------------- PCA colour noise


@pytest.mark.parametrize("mode", ["paper", "std"])
def test_colour_noise_has_the_papers_covariance(mode: str) -> None:
    stats = random_stats(8)
    pipe = InputPipeline(_Stats(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), stats, 6), CPU, False, seed=5,
                         normalize="mean-image", pca=mode, pca_std=0.1)  # fmt: skip
    offsets = torch.cat([pipe.crop_params(0, step, 500).colour for step in range(80)]).double()  # 40,000 draws
    scale = stats.eigvals.double() / 255 if mode == "paper" else stats.eigvals.double().sqrt()
    p = stats.eigvecs.double()
    expected = p @ torch.diag(scale**2 * 0.1**2) @ p.T  # alpha ~ N(0, 0.1): var 0.01
    cov = torch.cov(offsets.T)
    assert torch.allclose(cov, expected, rtol=0, atol=0.03 * expected.abs().max().item())
    assert offsets.mean(0).abs().max().item() < 4 * math.sqrt(expected.diag().max().item() / len(offsets))
    # In the eigenbasis the components are uncorrelated with variances (0.1 * s_i)^2.
    coords = offsets @ p
    assert torch.allclose(coords.var(0), (0.1 * scale) ** 2, rtol=0.05)
    if mode == "paper":  # lambda on [0, 1] values: a shift of about one grey level, the "small" change
        assert 0.5 < offsets.std(0).max().item() < 5


def test_colour_noise_is_fresh_per_image_and_use_and_reproducible() -> None:
    pipe = InputPipeline(_Stats(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), random_stats(8), 6), CPU, False,
                         seed=5, normalize="mean-image", pca="paper")  # fmt: skip
    a, b = pipe.crop_params(0, 0, 64).colour, pipe.crop_params(0, 1, 64).colour
    assert not torch.equal(a, b) and len(set(a[:, 0].tolist())) == 64  # every image, every use: a new alpha
    assert torch.equal(a, pipe.crop_params(0, 0, 64).colour)
    assert not torch.equal(a, pipe.crop_params(1, 0, 64).colour)
    off = pca_colour_shift(torch.randn(5, 3), random_stats(8), "off")
    assert torch.equal(off, torch.zeros(5, 3))


def test_colour_noise_is_added_to_every_pixel_of_the_image() -> None:
    pipe, images = _pipeline_pair(80, 70, "mean-image", "paper")
    params = pipe.crop_params(0, 0, 16)
    plain = pipe.train(images, CropParams(params.tops, params.lefts, params.flips))
    noisy = pipe.train(images.contiguous(memory_format=torch.channels_last), params)
    diff = noisy - plain
    assert torch.allclose(diff, params.colour[:, :, None, None].expand_as(diff), atol=1e-4)


# ----------------------------------------------------------------------------- mean image, prepared data


def test_mean_subtraction_uses_the_stored_mean_image(prepared: Path) -> None:
    ds = PreparedDataset(prepared)
    stored = torch.from_numpy(np.load(prepared / "mean_image.npy")).permute(2, 0, 1).float()
    pipe = InputPipeline(ds, CPU, channels_last=True, seed=0, normalize="mean-image", pca="off")
    assert torch.equal(pipe.norm.mean_image, stored)
    images, _ = ds.read("val", [0, 1, 2])
    assert pipe._fast_cpu(images)
    c = ds.eval_crop
    top = (72 - c) // 2
    expected = images.float()[:, :, top : top + c, top : top + c] - stored[:, top : top + c, top : top + c]
    assert torch.equal(pipe.eval(images), expected)


def test_loader_batches_are_identical_for_any_number_of_workers(prepared: Path) -> None:
    def run(workers: int, seed: int = 7, epoch: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ds = PreparedDataset(prepared, workers=workers, prefetch=1)
        pipe = InputPipeline(ds, CPU, channels_last=True, seed=seed, normalize="mean-image", pca="paper")
        plan = BatchPlan(8, shuffle=True, seed=seed, epoch=epoch, drop_last=True)
        batches = enumerate(ds.batches("train", plan))
        return [(pipe.train(x, pipe.crop_params(epoch, step, 8)), y) for step, (x, y) in batches]

    reference = run(0)
    assert len(reference) == 38 // 8
    for workers in (1, 3):
        again = run(workers)
        pairs = zip(reference, again, strict=True)
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in pairs)
    other = run(2, seed=8)
    assert not torch.equal(torch.cat([y for _, y in other]), torch.cat([y for _, y in reference]))
    later = run(2, epoch=3)
    assert not torch.equal(torch.cat([y for _, y in later]), torch.cat([y for _, y in reference]))


@pytest.mark.parametrize("world_size,workers", [(1, 0), (1, 3), (2, 2), (3, 2), (4, 1)])
def test_ranks_and_workers_read_disjoint_parts_that_cover_the_epoch(
    prepared: Path, world_size: int, workers: int
) -> None:
    """Training: every sample at most once per epoch, all but fewer than one global batch
    (the dropped remainder, a different one each epoch); evaluation: every sample exactly once."""
    reads: list[tuple[int, str, list[int]]] = []
    lock = threading.Lock()
    labels = {split: PreparedDataset(prepared).labels(split) for split in ("train", "val")}

    def dataset_for(rank: int) -> PreparedDataset:
        ds = PreparedDataset(prepared, workers=workers)
        read = ds.read

        def spy(split: str, indices: torch.Tensor, fds: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            with lock:
                reads.append((rank, threading.current_thread().name, torch.as_tensor(indices).tolist()))
            return read(split, indices, fds)

        ds.read = spy  # type: ignore[method-assign]
        return ds

    global_batch = 6 * world_size
    for split, drop_last in (("train", True), ("val", False)):
        n = labels[split].numel()
        for epoch in (0, 1):
            reads.clear()
            seen_labels = []
            for rank in range(world_size):
                plan = BatchPlan(global_batch, shuffle=split == "train", seed=4, epoch=epoch, rank=rank,
                                 world_size=world_size, drop_last=drop_last)  # fmt: skip
                for images, y in dataset_for(rank).batches(split, plan):
                    assert images.shape[0] == len(y)
                    seen_labels.append(y)
            every = [i for _, _, idx in reads for i in idx]
            assert len(every) == len(set(every))  # nobody reads a sample twice: disjoint shares
            expected = (n // global_batch) * global_batch if drop_last else n
            assert len(every) == expected and n - expected < global_batch
            if not drop_last:
                assert sorted(every) == list(range(n))
            else:
                order = torch.randperm(n, generator=generator("shuffle", 4, epoch)).tolist()
                assert set(every) == set(order[:expected])  # the dropped remainder is the shuffle's tail
            # The labels delivered are the labels of what was read.
            assert sorted(torch.cat(seen_labels).tolist()) == sorted(labels[split][every].tolist())
            for rank in range(world_size):  # worker w of a rank reads its batches w, w + workers, ...
                plan = BatchPlan(global_batch, shuffle=split == "train", seed=4, epoch=epoch, rank=rank,
                                 world_size=world_size, drop_last=drop_last)  # fmt: skip
                reader = {tuple(idx): name for r, name, idx in reads if r == rank}
                for k, idx in enumerate(plan.local_indices(n)):
                    assert reader[tuple(idx.tolist())] == (f"alexnet-loader-{k % workers}" if workers else "MainThread")


def test_worker_assignment_is_round_robin_and_complete() -> None:
    done: list[tuple[int, str]] = []

    def fn(item: int, fds: dict[int, int]) -> int:
        done.append((item, threading.current_thread().name))
        return item * item

    assert list(ordered_parallel_map(fn, list(range(23)), workers=4, prefetch=1)) == [i * i for i in range(23)]
    assert sorted(i for i, _ in done) == list(range(23))
    assert all(name == f"alexnet-loader-{i % 4}" for i, name in done)


def test_loader_errors_reach_the_consumer_and_stopping_early_stops_the_threads() -> None:
    before = threading.active_count()

    def fn(item: int, fds: dict[int, int]) -> int:
        if item == 5:
            raise UserError("shard broken")
        return item

    with pytest.raises(UserError, match="shard broken"):
        list(ordered_parallel_map(fn, list(range(10)), workers=2))
    it = ordered_parallel_map(lambda i, fds: i, list(range(100)), workers=3)
    assert next(it) == 0
    it.close()
    assert threading.active_count() == before


def test_resumed_epoch_reads_the_rest_of_the_same_order(prepared: Path) -> None:
    ds = PreparedDataset(prepared, workers=2)
    full = [y for _, y in ds.batches("train", BatchPlan(8, shuffle=True, seed=1, epoch=4, drop_last=True))]
    resumed = BatchPlan(8, shuffle=True, seed=1, epoch=4, drop_last=True, start_step=2)
    rest = [y for _, y in ds.batches("train", resumed)]
    assert all(torch.equal(a, b) for a, b in zip(full[2:], rest, strict=True))


def test_gpu_decoding_without_a_gpu_is_a_clear_error(prepared: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="CUDA"):
        PreparedDataset(prepared, decode_device="cuda")
    with pytest.raises(UserError, match="cannot decode on"):
        PreparedDataset(prepared, decode_device="tpu")


# ----------------------------------------------------------------------------- evaluation


class _Linear(nn.Module):
    def __init__(self, seed: int, classes: int = 7) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 6 * 6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * 3


def test_ensemble_and_ten_crop_average_the_softmaxes() -> None:
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 7, (9,), generator=g))
        for _ in range(3)
    ]
    models = [_Linear(1), _Linear(2)]
    norm = lambda x: (x.float() - 128) / 64

    def transform_1(x: torch.Tensor) -> torch.Tensor:
        return norm(x[..., 1:7, 1:7])

    def transform_10(x: torch.Tensor) -> torch.Tensor:
        return norm(ten_crops(x, 6))

    for transform, crops in ((transform_1, 1), (transform_10, 10)):
        counts = torch.zeros(7, 3, dtype=torch.int64)
        meter = evaluate(models, batches, transform, "fp32", CPU, crops=crops, per_class=counts)
        probs, labels = [], []
        with torch.no_grad():
            for x, y in batches:
                per_model = []
                for m in models:
                    p = m(transform(x)).softmax(1)  # crops * N rows, crop-major
                    per_model.append(p.view(crops, len(y), -1).mean(0))
                probs.append(sum(per_model) / len(models))
                labels.append(y)
        p, y = torch.cat(probs), torch.cat(labels)
        top5 = p.topk(5, 1).indices == y[:, None]
        assert meter.count == 27
        assert meter.top1.item() == (p.argmax(1) == y).sum().item()
        assert meter.top5.item() == top5.any(1).sum().item()
        assert math.isclose(meter.loss_sum.item() / 27, -p[torch.arange(27), y].log().mean().item(), rel_tol=1e-5)
        assert counts[:, 0].sum() == 27 and torch.equal(counts[:, 0], torch.bincount(y, minlength=7))
        assert torch.equal(counts[:, 1], torch.bincount(y[p.argmax(1) == y], minlength=7))
    # Averaging softmaxes is not averaging logits: the loss tells them apart.
    single = [evaluate([m], batches, transform_1, "fp32", CPU).summary()["loss"] for m in models]
    both = evaluate(models, batches, transform_1, "fp32", CPU).summary()["loss"]
    assert both < max(single)


def test_evaluation_skips_a_rank_s_empty_share() -> None:
    model = _Linear(0)
    batches = [(torch.zeros(0, 3, 6, 6, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)),
               (torch.zeros(2, 3, 6, 6, dtype=torch.uint8), torch.tensor([1, 2]))]  # fmt: skip
    meter = evaluate([model], batches, lambda x: x.float(), "fp32", CPU)
    assert meter.count == 2 and math.isfinite(meter.summary()["loss"])


# ----------------------------------------------------------------------------- end to end


def test_paper_net_on_an_imagenet_layout_then_ten_crop_ensemble_eval(tmp_path: Path) -> None:
    src = fx.make_ilsvrc(tmp_path / "ilsvrc", extracted=True, hostile=False)
    out = tmp_path / "prepared"
    proc = run_cli("prepare", str(src), str(out), "--size", "256", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    proc = run_cli("train", "--data", str(out), "--recipe", "paper", "--epochs", "1", "--batch-size", "4",
                   "--device", "cpu", "--precision", "fp32", "--workers", "2", "--no-progress",
                   "--out", str(run))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_name"] == "alexnet" and ckpt["step"] == 9 // 4  # 9 usable train images, batches of 4
    assert ckpt["data"]["mean_image"] is not None  # the paper's normalisation was stored with the model
    del ckpt
    per_class = tmp_path / "classes.csv"
    proc = run_cli("eval", str(run), "--data", str(out), "--ten-crop", "--json", "--per-class", str(per_class))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 6 and result["crops"] == 10 and len(result["models"]) == 1  # 7 val images, 1 truncated
    assert 0 <= result["top5_err"] <= result["top1_err"] <= 1
    rows = list(csv.DictReader(per_class.open()))
    assert [r["id"] for r in rows] == fx.SORTED_WNIDS and [r["label"] for r in rows] == ["0", "1", "2"]
    assert sum(int(r["images"]) for r in rows) == 6
    assert rows[0]["class"] == "alpha, first class"
    # An ensemble of a model with itself is that model.
    proc = run_cli("eval", str(run), str(run / "checkpoints" / "last.pt"), "--data", str(out), "--ten-crop", "--json")
    assert proc.returncode == 0, proc.stderr
    pair = json.loads(proc.stdout)
    assert pair["models"] == [str(run), str(run / "checkpoints" / "last.pt")]
    assert (pair["top1_err"], pair["top5_err"]) == (result["top1_err"], result["top5_err"])
