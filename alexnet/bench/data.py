"""``alexnet bench data``: training-batch throughput of our input pipeline beside the usual one.

One run, one set of photo-like JPEGs of about 500x375 in a few class folders (generated once
into a cache folder, then reused; ``alexnet bench prepare``'s generator), prepared once with
``alexnet prepare`` (256x256 JPEG shards). Measured in the same process, interleaved, best of
``--repeat`` rounds of at least ``--seconds`` each, batches of 128:

1. **baseline**: ``torchvision.datasets.ImageFolder`` over the original JPEGs with PIL and
   ``Resize(256)``, ``CenterCrop(256)``, ``RandomCrop(227)``, ``RandomHorizontalFlip()``,
   ``ToTensor()``, ``Normalize(...)``, in a ``DataLoader`` with ``--workers`` processes
   (shuffled, otherwise default settings);
2. **ours**: :class:`~alexnet.data.prepared.PreparedDataset` over the shards with ``--workers``
   decoding threads, and :class:`~alexnet.data.pipeline.InputPipeline` with the paper's
   recipe (random 227 crop, flip, mean-image subtraction, PCA colour noise): float32
   channels_last batches, ready for a CPU model;
   **ours, loader stage**: the same without the augmentation, i.e. the uint8 batches that go to
   a GPU, where crops, flips, normalisation and colour noise run on the device;
3. **decode limit**: ``torchvision.io.decode_jpeg`` (our decoder) alone on the prepared JPEGs,
   already in memory, in ``--workers`` threads.

Besides images/s (wall clock), each line gives CPU-milliseconds per image (all threads and
worker processes), which a machine shared with other jobs disturbs far less. A one-thread
comparison of the CPU decoders on the prepared JPEGs (torchvision / PIL / PIL with ``draft``)
is printed too; it is how the decoder was chosen.

Last, the **ceiling of any CPU path to float tensors**: decoding alone costs D CPU-ms per image;
a path to float tensors costs at least the loader's L plus the cheapest possible conversion F
(one plain uint8 -> float32 copy of the crop, one thread). Using the cores as well as the
decode-only loop does, it reaches at most D / (L + F) of the decode limit; mean subtraction,
mirroring and colour noise only add to F. So this says how close "ours" can get on this machine.
"""

from __future__ import annotations

import argparse
import io
import json
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

from alexnet.cli.common import positive_int
from alexnet.errors import UserError
from alexnet.runtime import cpu_name

if TYPE_CHECKING:
    from alexnet.data.prepared import PreparedDataset

BATCH = 128


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="training-batch images/s of our loader vs ImageFolder+PIL", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workers", type=positive_int, default=None,
                   help="loader workers for both (default: cores, at most 8)")
    p.add_argument("--images", type=positive_int, default=1024,
                   help="generated JPEGs (default 1024; fewer only for smoke tests)")
    p.add_argument("--classes", type=positive_int, default=8, help="class folders (default 8)")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum duration of each measurement (default 3)")
    p.add_argument("--repeat", type=positive_int, default=2, help="rounds; the best of each is reported (default 2)")
    p.add_argument("--cache", default=None, help="folder for the generated and prepared images "
                   "(default $XDG_CACHE_HOME/alexnet/bench-data)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


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
    images = decode_images([bytearray(b) for b in raw[:BATCH]], ds.encoding, ds.size).permute(0, 2, 3, 1)
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



def run(args: argparse.Namespace) -> int:
    from alexnet.data.prepare import Settings, default_workers, prepare
    from alexnet.data.prepared import PreparedDataset
    from alexnet.runtime import tune_cpu_allocator

    if args.images < BATCH:
        raise UserError(f"--images must be at least one batch ({BATCH})")
    if args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    tune_cpu_allocator()  # as `alexnet train` does
    workers = args.workers or min(default_workers(), 8)
    cache = cache_dir(args.cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        src = ensure_source(cache / f"jpeg-{args.images}-{args.classes}", args.images, args.classes)
    except OSError as e:
        raise UserError(f"cannot write the benchmark images to {cache} ({e.strerror or e}); pass --cache DIR") from None
    prepared = cache / f"prepared-{args.images}-{args.classes}"
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

    for r in range(args.repeat):
        keep("baseline", run_baseline(src / "train", workers, args.seconds))
        keep("ours", run_ours(prepared, workers, args.seconds, augment=True, epoch0=1000 * r))
        keep("loader", run_ours(prepared, workers, args.seconds, augment=False, epoch0=1000 * r))
        keep("decode_limit", run_decode_limit(blobs, workers, args.seconds))
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
        "input": f"photo-like JPEG ~500x375, quality 90, mean {mean_kb:.0f} KiB, {args.classes} classes",
        "prepared": "256x256 JPEG quality 90 shards (alexnet prepare)",
        "ours_pipeline": "threads decode_jpeg -> uint8 NHWC batch -> 227 crop, flip, minus mean image, PCA colour "
                         "(paper), float32 channels_last",
        "baseline_pipeline": "ImageFolder, PIL, Resize(256), CenterCrop(256), RandomCrop(227), "
                             "RandomHorizontalFlip(), ToTensor(), Normalize(), DataLoader processes",
        "cpu": cpu_name(),
        "cores": default_workers(),
        "load_average": list(os.getloadavg()),
        "seconds": args.seconds,
        "repeat": args.repeat,
        "cache": str(cache),
    }  # fmt: skip
    if args.json:
        print(json.dumps(row))
        return 0
    cpu = row["cpu_ms_per_img"]
    print(f"{n} {row['input']}; batches of {BATCH}; {workers} workers; {row['cpu']}, {row['cores']} cores, "
          f"load average {row['load_average'][0]:.1f}")  # fmt: skip
    print(f"baseline  ImageFolder+PIL+transforms, DataLoader: {base:8.0f} img/s  {cpu['baseline']:6.2f} CPU-ms/img")
    print(f"ours      shards+threads+paper augmentation:    {ours:8.0f} img/s  {cpu['ours']:6.2f} CPU-ms/img  "
          f"{row['ratio']:.1f}x baseline, {row['ours_fraction_of_limit']:.0%} of the decode limit")  # fmt: skip
    print(f"  loader stage (uint8 batches for a GPU):      {loader:8.0f} img/s  {cpu['loader']:6.2f} CPU-ms/img  "
          f"{loader / base:.1f}x baseline, {row['loader_fraction_of_limit']:.0%} of the decode limit")  # fmt: skip
    print(f"decode limit  decode_jpeg alone, in memory:   {limit:8.0f} img/s  {cpu['decode_limit']:6.2f} CPU-ms/img")
    print(f"  ceiling of any CPU path to float32: decode {cpu['decode_limit']:.2f} / (loader {cpu['loader']:.2f} "
          f"+ bare uint8->float32 copy {floor_ms:.3f}) CPU-ms/img = "
          f"{row['float_path_ceiling_fraction_of_limit']:.0%} of the decode limit ({float_ceiling:.0f} img/s)")  # fmt: skip
    rates = ", ".join(f"{k} {v:.0f}" for k, v in decoders["images_per_cpu_s"].items())
    print(f"decoders on the prepared 256x256 JPEGs, images per CPU-second (1 thread): {rates}; "
          f"max pixel difference torchvision vs PIL: {decoders['max_pixel_difference_tv_vs_pil']}")  # fmt: skip
    return 0
