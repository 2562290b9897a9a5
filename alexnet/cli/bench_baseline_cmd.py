"""``alexnet bench baseline``: our batched HOG beside ``skimage.feature.hog`` called per image.

Same images, same parameters (9 orientations, 2x2-cell blocks, L2-Hys), measured in the same
process, best of ``--repeat`` rounds: images/s of each, CPU ms/image (less disturbed by other jobs
on a shared machine), the ratio and the largest absolute difference of the two outputs (equal
within 1e-5). Cases: each HOG scale of the ``hog`` baseline (4 px and 7 px cells) on
Fashion-MNIST's first ``--images`` training images (else synthetic 28 px ones); both scales as
the baseline extracts them; 8 px cells on a quarter as many synthetic 64 px colour images.
scikit-image is a test/benchmark-only dependency (``pip install scikit-image``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from alexnet.bench.baseline import benchmark
from alexnet.cli.common import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alexnet bench baseline``."""
    p = sub.add_parser("baseline", help="HOG images/s: ours (batched) vs skimage.feature.hog per image", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--images", type=positive_int, default=5000, help="images for ours (default 5000)")
    p.add_argument("--reference-images", type=positive_int, default=1000, help="images for scikit-image (default 1000)")
    p.add_argument("--repeat", type=positive_int, default=2, help="rounds; the best is reported (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure every HOG scale and print the table (or JSON)."""
    summary = benchmark(args.images, args.reference_images, args.repeat)
    if args.json:
        print(json.dumps(summary))
        return 0
    _print_table(summary, args.repeat)
    return 0


def _print_table(s: dict[str, Any], repeat: int) -> None:
    print(f"HOG, ours (batched) vs skimage.feature.hog (per image); torch threads {s['torch_threads']} "
          f"on {s['cpus']} CPUs; load average {s['load_average'][0]:.2f} -> {s['load_average'][1]:.2f}; best of {repeat}")  # fmt: skip
    header = ("case", "ours img/s", "skimage img/s", "ratio", "ours CPU ms", "skimage CPU ms", "max |diff|", "images")
    print(f"{header[0]:<20} {header[1]:>11} {header[2]:>14} {header[3]:>7} {header[4]:>12} {header[5]:>15} {header[6]:>11}  {header[7]}")
    for r in s["scales"]:
        print(f"{r['case']:<20} {r['ours_images_per_sec']:>11,.0f} {r['skimage_images_per_sec']:>14,.0f} {r['ratio']:>6.1f}x "
              f"{r['ours_cpu_ms_per_image']:>12.3f} {r['skimage_cpu_ms_per_image']:>15.3f} {r['max_abs_diff']:>11.1e}  {r['data']}")  # fmt: skip
