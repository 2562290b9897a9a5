"""``alexnet bench prepare``: images/s of ``alexnet prepare`` beside a plain PIL loop.

Both run in the same process, on the same generated folder of photo-like JPEGs of about
500x375 (the typical ImageNet size): smooth colour fields, edges and grain, saved at quality
90. The baseline is what one writes first: one process, for each file ``Image.open``,
``convert("RGB")``, resize the short side to SIZE (bicubic, antialiased), centre crop,
``save`` as JPEG quality 90. Ours is the full ``prepare``: listing, parallel conversion,
shard writing, exact statistics, index and manifest.
"""

from __future__ import annotations

import argparse
import json

from alexnet.bench.prepare import benchmark
from alexnet.cli.common import positive_int
from alexnet.data.prepare import default_workers


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alexnet bench prepare``."""
    p = sub.add_parser("prepare", help="images/s of `alexnet prepare` vs a plain PIL loop", description=__doc__)
    p.add_argument("--images", type=positive_int, default=400, help="number of generated JPEGs (default 400)")
    p.add_argument("--size", type=positive_int, default=256, help="output side (default 256)")
    p.add_argument("--workers", type=positive_int, default=None, help="prepare's processes (default: all cores)")
    p.add_argument(
        "--repeat", type=positive_int, default=2, help="timed runs of each; the best is reported (default 2)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure both and print the result line (or JSON)."""
    workers = args.workers or default_workers()
    row = benchmark(args.images, args.size, workers, args.repeat)
    if args.json:
        print(json.dumps(row))
    else:
        print(f"prepare ({workers} workers): {row['ours_images_per_s']:.1f} images/s   "
              f"plain PIL loop (1 process): {row['baseline_images_per_s']:.1f} images/s   "
              f"-> {row['speedup']:.2f}x")  # fmt: skip
        print(f"{args.images} {row['input']} -> {args.size}x{args.size} JPEG q90; {row['cpu']}, {row['cores']} cores")
    return 0
