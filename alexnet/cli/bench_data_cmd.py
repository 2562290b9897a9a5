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
import json
from typing import Any

from alexnet.bench.data import BATCH, benchmark, cache_dir, source_in
from alexnet.cli.common import float_in, positive_int
from alexnet.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alexnet bench data``."""
    p = sub.add_parser("data", help="training-batch images/s of our loader vs ImageFolder+PIL", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workers", type=positive_int, default=None,
                   help="loader workers for both (default: cores, at most 8)")
    p.add_argument("--images", type=positive_int, default=1024,
                   help="generated JPEGs (default 1024; fewer only for smoke tests)")
    p.add_argument("--classes", type=positive_int, default=8, help="class folders (default 8)")
    p.add_argument("--seconds", type=float_in(0, 86400, low_open=True), default=3.0, help="minimum duration of each measurement (default 3)")
    p.add_argument("--repeat", type=positive_int, default=2, help="rounds; the best of each is reported (default 2)")
    p.add_argument("--cache", default=None, help="folder for the generated and prepared images "
                   "(default $XDG_CACHE_HOME/alexnet/bench-data)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate (or reuse) and prepare the set, measure every path and print the lines (or JSON)."""
    from alexnet.data.prepare import default_workers

    if args.images < BATCH:
        raise UserError(f"--images must be at least one batch ({BATCH})")
    if args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    workers = args.workers or min(default_workers(), 8)
    cache = cache_dir(args.cache)
    try:
        src = source_in(cache, args.images, args.classes)
    except OSError as e:
        raise UserError(f"cannot write the benchmark images to {cache} ({e.strerror or e}); pass --cache DIR") from None
    row = benchmark(cache, src, args.images, args.classes, workers, args.seconds, args.repeat)
    if args.json:
        print(json.dumps(row))
        return 0
    _print_lines(row)
    return 0


def _print_lines(row: dict[str, Any]) -> None:
    cpu, decoders = row["cpu_ms_per_img"], row["decoders"]
    base, ours, loader, limit = row["baseline_img_s"], row["ours_img_s"], row["loader_img_s"], row["decode_limit_img_s"]
    print(f"{row['images']} {row['input']}; batches of {row['batch_size']}; {row['workers']} workers; {row['cpu']}, "
          f"{row['cores']} cores, load average {row['load_average'][0]:.1f}")  # fmt: skip
    print(f"baseline  ImageFolder+PIL+transforms, DataLoader: {base:8.0f} img/s  {cpu['baseline']:6.2f} CPU-ms/img")
    print(f"ours      shards+threads+paper augmentation:    {ours:8.0f} img/s  {cpu['ours']:6.2f} CPU-ms/img  "
          f"{row['ratio']:.1f}x baseline, {row['ours_fraction_of_limit']:.0%} of the decode limit")  # fmt: skip
    print(f"  loader stage (uint8 batches for a GPU):      {loader:8.0f} img/s  {cpu['loader']:6.2f} CPU-ms/img  "
          f"{loader / base:.1f}x baseline, {row['loader_fraction_of_limit']:.0%} of the decode limit")  # fmt: skip
    print(f"decode limit  decode_jpeg alone, in memory:   {limit:8.0f} img/s  {cpu['decode_limit']:6.2f} CPU-ms/img")
    print(f"  ceiling of any CPU path to float32: decode {cpu['decode_limit']:.2f} / (loader {cpu['loader']:.2f} "
          f"+ bare uint8->float32 copy {cpu['float32_copy_floor']:.3f}) CPU-ms/img = "
          f"{row['float_path_ceiling_fraction_of_limit']:.0%} of the decode limit "
          f"({row['float_path_ceiling_img_s']:.0f} img/s)")  # fmt: skip
    rates = ", ".join(f"{k} {v:.0f}" for k, v in decoders["images_per_cpu_s"].items())
    print(f"decoders on the prepared 256x256 JPEGs, images per CPU-second (1 thread): {rates}; "
          f"max pixel difference torchvision vs PIL: {decoders['max_pixel_difference_tv_vs_pil']}")  # fmt: skip
