"""``alexnet bench data``'s measurement: training-batch throughput of our input pipeline beside
ImageFolder + PIL + a DataLoader, the decode limit, a comparison of the CPU decoders and the
ceiling of any CPU path to float tensors, on one generated and prepared set of photo-like JPEGs.

What each line measures and how, and the printing: ``cli/bench_data_cmd.py``.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from alexnet.runtime import cpu_name

if TYPE_CHECKING:
    from alexnet.data.prepared import PreparedDataset

BATCH = 128


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet" / "bench-data"


def ensure_source(root: Path, count: int, classes: int) -> Path:
    """``root/train/class_k/img_n.jpg`` (photo-like, ~500x375, quality 90), generated unless a
    complete set is already there (written to a temporary folder, renamed when done)."""
    from alexnet.bench.prepare import make_source

    if (root / "complete").is_file():
        return root
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    make_source(tmp, count, classes=classes)
    (tmp / "complete").write_text(f"{count} images, {classes} classes\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children (loader processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(epoch_fn: Callable[[int], Iterator[int]], seconds: float) -> tuple[float, float]:
    """Run ``epoch_fn(epoch)`` (yielding batch sizes) epoch after epoch for at least ``seconds``
    and at least one epoch; returns (images/s, CPU ms/image). The generator is closed before
    the clock stops, so loader processes are joined and their CPU time counted."""
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    images, epoch = 0, 0
    while epoch == 0 or time.perf_counter() - start_wall < seconds:
        it = epoch_fn(epoch)
        for n in it:
            images += n
        epoch += 1
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    return images / wall, cpu / max(images, 1) * 1e3


def run_baseline(train_dir: Path, workers: int, seconds: float) -> tuple[float, float]:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(256), transforms.RandomCrop(227),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])  # fmt: skip
    folder = datasets.ImageFolder(str(train_dir), transform=tf)
    # A standard DataLoader: default settings (workers started each epoch and joined at its end,
    # so their CPU time is in RUSAGE_CHILDREN when measure() reads it).
    loader = torch.utils.data.DataLoader(folder, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)

    def epoch(_: int) -> Iterator[int]:
        for x, _y in loader:
            yield len(x)

    return measure(epoch, seconds)


def run_ours(prepared: Path, workers: int, seconds: float, augment: bool, epoch0: int) -> tuple[float, float]:
    from alexnet.data.dataset import BatchPlan
    from alexnet.data.pipeline import InputPipeline
    from alexnet.data.prepared import PreparedDataset
    from alexnet.training.recipes import PAPER

    ds = PreparedDataset(prepared, workers=workers)
    pipe = InputPipeline(ds, torch.device("cpu"), channels_last=True, seed=0, normalize=PAPER.normalize,
                         pca=PAPER.pca_lighting, pca_std=PAPER.pca_std)  # fmt: skip

    def epoch(e: int) -> Iterator[int]:
        plan = BatchPlan(BATCH, shuffle=True, seed=0, epoch=epoch0 + e, drop_last=True)
        for step, (images, labels) in enumerate(ds.batches("train", plan)):
            if augment:
                x = pipe.train(images, pipe.crop_params(epoch0 + e, step, BATCH))
                assert x.dtype == torch.float32 and x.shape[-1] == ds.train_augment.crop
            yield len(labels)

    return measure(epoch, seconds)


def run_decode_limit(blobs: list[torch.Tensor], workers: int, seconds: float) -> tuple[float, float]:
    from torchvision.io import ImageReadMode, decode_jpeg

    from alexnet.data.prepared import ordered_parallel_map

    chunks = [blobs[i : i + BATCH] for i in range(0, len(blobs), BATCH)]

    def decode(chunk: list[torch.Tensor], _fds: dict[int, int]) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            decode_jpeg(chunk, mode=ImageReadMode.RGB)
        return len(chunk)

    return measure(lambda _e: ordered_parallel_map(decode, chunks, workers), seconds)


def float_copy_floor(raw: list[bytes], ds: PreparedDataset, repeat: int = 5) -> float:
    """CPU-ms per image of the cheapest possible step from a decoded uint8 image to float32:
    one plain converting copy of its training-crop window (no mean, no flip, no noise), one
    thread, on a real decoded batch, best of ``repeat``. Every CPU path to float tensors pays
    at least this on top of the loader, so it bounds what such a path can reach."""
    from alexnet.data.prepared import decode_images
    from alexnet.data.presets import single_threaded_ops

    # The loader's own decode: an N,H,W,C uint8 batch, as the augmentation step receives it.
    images = decode_images([bytearray(b) for b in raw[:BATCH]], ds.encoding, ds.size, channels=ds.channels)
    images = images.permute(0, 2, 3, 1)
    size = ds.train_augment.crop
    out = torch.empty((len(images), size, size, images.shape[-1]), dtype=torch.float32)
    best = float("inf")
    with single_threaded_ops():
        for _ in range(repeat):
            start = time.thread_time()
            for i in range(len(images)):
                out[i].copy_(images[i, :size, :size])
            best = min(best, time.thread_time() - start)
    return best / len(images) * 1e3


def compare_decoders(raw: list[bytes]) -> dict[str, Any]:
    """Images/s of each CPU decoder in one thread, and whether they decode to the same pixels."""
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    def tv(b: bytes) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return image.permute(1, 2, 0).numpy()

    def pil(b: bytes, draft: bool = False) -> np.ndarray:
        with Image.open(io.BytesIO(b)) as im:
            if draft:
                im.draft("RGB", im.size)
            return np.asarray(im.convert("RGB"))

    decoders: dict[str, Callable[[bytes], np.ndarray]] = {
        "torchvision.io.decode_jpeg": tv, "PIL": pil, "PIL+draft": lambda b: pil(b, True),
    }  # fmt: skip
    rates = {}
    for name, fn in decoders.items():
        best = float("inf")
        for _ in range(2):
            start = time.thread_time()
            for b in raw:
                fn(b)
            best = min(best, time.thread_time() - start)
        rates[name] = len(raw) / best
    sample = raw[: min(len(raw), 32)]
    max_diff = max(int(np.abs(tv(b).astype(np.int16) - pil(b).astype(np.int16)).max()) for b in sample)
    return {"images_per_cpu_s": rates, "max_pixel_difference_tv_vs_pil": max_diff}


def source_in(cache: Path, images: int, classes: int) -> Path:
    """The generated JPEGs for ``images`` and ``classes`` in ``cache`` (made unless already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    return ensure_source(cache / f"jpeg-{images}-{classes}", images, classes)


def benchmark(cache: Path, src: Path, images: int, classes: int, workers: int, seconds: float,
              repeat: int) -> dict[str, Any]:  # fmt: skip
    """Prepare ``src`` into ``cache`` (256 px shards), then measure every path, interleaved, best
    of ``repeat`` rounds of at least ``seconds`` each: the result row (what ``--json`` prints)."""
    from alexnet.data.prepare import Settings, default_workers, prepare
    from alexnet.data.prepared import PreparedDataset
    from alexnet.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # as `alexnet train` does
    prepared = cache / f"prepared-{images}-{classes}"
    prepare(src, prepared, layout="folder", settings=Settings(size=256), workers=default_workers(), progress=False)
    ds = PreparedDataset(prepared)
    n = ds.num_samples("train")
    raw = [ds.read_bytes("train", i) for i in range(n)]
    blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
    files = sorted((src / "train").rglob("*.jpg"))
    mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024

    best: dict[str, tuple[float, float]] = {}

    def keep(name: str, result: tuple[float, float]) -> None:
        if name not in best or result[0] > best[name][0]:
            best[name] = result

    for r in range(repeat):
        keep("baseline", run_baseline(src / "train", workers, seconds))
        keep("ours", run_ours(prepared, workers, seconds, augment=True, epoch0=1000 * r))
        keep("loader", run_ours(prepared, workers, seconds, augment=False, epoch0=1000 * r))
        keep("decode_limit", run_decode_limit(blobs, workers, seconds))
    decoders = compare_decoders(raw[: min(n, 256)])
    floor_ms = float_copy_floor(raw, ds)
    (base, base_cpu), (ours, ours_cpu) = best["baseline"], best["ours"]
    (loader, loader_cpu), (limit, limit_cpu) = best["loader"], best["decode_limit"]
    # What a CPU path to float tensors could reach at best: the decode limit scaled by the CPU
    # time per image, decode alone vs the loader plus the bare float32 copy (as if that path
    # used the cores as well as the decode-only loop does).
    float_ceiling = limit * limit_cpu / (loader_cpu + floor_ms)
    row = {
        "benchmark": "data",
        "baseline_img_s": base,
        "ours_img_s": ours,
        "ratio": ours / base,
        "decode_limit_img_s": limit,
        "ours_fraction_of_limit": ours / limit,
        "loader_img_s": loader,
        "loader_fraction_of_limit": loader / limit,
        "cpu_ms_per_img": {"baseline": base_cpu, "ours": ours_cpu, "loader": loader_cpu, "decode_limit": limit_cpu,
                           "float32_copy_floor": floor_ms},
        "float_path_ceiling_img_s": float_ceiling,
        "float_path_ceiling_fraction_of_limit": float_ceiling / limit,
        "decoders": decoders,
        "workers": workers,
        "batch_size": BATCH,
        "images": n,
        "input": f"photo-like JPEG ~500x375, quality 90, mean {mean_kb:.0f} KiB, {classes} classes",
        "prepared": "256x256 JPEG quality 90 shards (alexnet prepare)",
        "ours_pipeline": "threads decode_jpeg -> uint8 NHWC batch -> 227 crop, flip, minus mean image, PCA colour "
                         "(paper), float32 channels_last",
        "baseline_pipeline": "ImageFolder, PIL, Resize(256), CenterCrop(256), RandomCrop(227), "
                             "RandomHorizontalFlip(), ToTensor(), Normalize(), DataLoader processes",
        "cpu": cpu_name(),
        "cores": default_workers(),
        "load_average": list(os.getloadavg()),
        "seconds": seconds,
        "repeat": repeat,
        "cache": str(cache),
    }  # fmt: skip
    return row
