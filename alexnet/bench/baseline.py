"""``alexnet bench baseline``: our batched HOG beside ``skimage.feature.hog`` called per image.

Same images (Fashion-MNIST's first ``--images`` training images, else synthetic 28 px ones),
same parameters (each HOG scale of the ``hog`` baseline: 9 orientations, 2x2-cell blocks,
L2-Hys), measured in the same process, best of ``--repeat`` rounds: images/s of each, CPU
ms/image (less disturbed by other jobs on a shared machine) and the ratio. Also prints the
largest absolute difference of the two outputs (equal within 1e-5).
scikit-image is a test/benchmark-only dependency (``pip install scikit-image``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from alexnet.cli.common import positive_int
from alexnet.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="HOG images/s: ours (batched) vs skimage.feature.hog per image", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--images", type=positive_int, default=5000, help="images for ours (default 5000)")
    p.add_argument("--reference-images", type=positive_int, default=1000, help="images for scikit-image (default 1000)")
    p.add_argument("--repeat", type=positive_int, default=2, help="rounds; the best is reported (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _images(count: int) -> tuple[torch.Tensor, str]:
    from alexnet.data.fashion_mnist import fashion_mnist
    from alexnet.data.synthetic import synthetic

    try:
        ds, name = fashion_mnist(), "fashion-mnist"
    except UserError:
        ds, name = synthetic(classes=10, size=28, train=count, val=1, channels=1), "SYNTHETIC 28 px"
    images = ds.splits["train"][0][:count]
    return images.contiguous(), f"{name}, {len(images)} images of {images.shape[1]}x{images.shape[2]}x{images.shape[3]}"


def _timed(fn: Any, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds of ``repeat`` calls."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - w), min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu


def measure(images: torch.Tensor, reference_images: int, repeat: int) -> list[dict[str, Any]]:
    """Per HOG scale of the ``hog`` baseline: ours and scikit-image's images/s, CPU ms, ratio."""
    try:
        from skimage.feature import hog as skimage_hog
    except ImportError:
        raise UserError("bench baseline needs scikit-image as the reference: pip install scikit-image") from None
    from alexnet.baselines.hog import hog
    from alexnet.baselines.pipeline import hog_scales

    ref = images[: min(reference_images, len(images))]
    ref_np = [im[0].numpy() for im in ref]
    rows = []
    for p in hog_scales(images.shape[-1]):
        kw = {"orientations": p.orientations, "pixels_per_cell": (p.cell, p.cell),
              "cells_per_block": (p.block, p.block), "block_norm": "L2-Hys"}  # fmt: skip
        ours_wall, ours_cpu = _timed(lambda p=p: hog(images, p), repeat)
        ref_wall, ref_cpu = _timed(lambda kw=kw: [skimage_hog(im, **kw) for im in ref_np], repeat)
        diff = float(np.abs(hog(ref, p).numpy() - np.stack([skimage_hog(im, **kw) for im in ref_np])).max())
        ours_rate, ref_rate = len(images) / ours_wall, len(ref) / ref_wall
        rows.append({
            "cell": p.cell, "orientations": p.orientations, "block": p.block,
            "ours_images_per_sec": ours_rate, "skimage_images_per_sec": ref_rate, "ratio": ours_rate / ref_rate,
            "ours_cpu_ms_per_image": ours_cpu / len(images) * 1e3, "skimage_cpu_ms_per_image": ref_cpu / len(ref) * 1e3,
            "max_abs_diff": diff,
        })  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> int:
    images, what = _images(args.images)
    rows = measure(images, args.reference_images, args.repeat)
    if args.json:
        print(json.dumps({"data": what, "torch_threads": torch.get_num_threads(), "scales": rows}))
        return 0
    print(f"HOG on {what}; torch threads {torch.get_num_threads()}; best of {args.repeat}")
    print(f"{'cell':>4} {'ours img/s':>11} {'skimage img/s':>14} {'ratio':>6} {'ours CPU ms':>12} {'skimage CPU ms':>15} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['cell']:>4} {r['ours_images_per_sec']:>11,.0f} {r['skimage_images_per_sec']:>14,.0f} {r['ratio']:>5.1f}x "
              f"{r['ours_cpu_ms_per_image']:>12.3f} {r['skimage_cpu_ms_per_image']:>15.3f} {r['max_abs_diff']:>11.1e}")  # fmt: skip
    return 0
