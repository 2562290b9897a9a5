"""``alexnet bench baseline``'s measurement: our batched HOG beside ``skimage.feature.hog``
called per image, on the same images with the same parameters, in the same process.

The command line and the table: ``cli/bench_baseline_cmd.py``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from alexnet.errors import UserError


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


def benchmark(images: int, reference_images: int, repeat: int) -> dict[str, Any]:
    """``images`` images (Fashion-MNIST's first, else synthetic) through :func:`measure`: the
    summary dict (what ``--json`` prints)."""
    data, what = _images(images)
    rows = measure(data, reference_images, repeat)
    return {"data": what, "torch_threads": torch.get_num_threads(), "scales": rows}
