"""``alexnet bench baseline``'s measurement: our batched HOG beside ``skimage.feature.hog``
called per image, on the same images with the same parameters, in the same process.

Cases: each HOG scale of the ``hog`` baseline on 28 px images (Fashion-MNIST's first training
images, else synthetic ones), both scales together as the baseline extracts them
(``Hog.transform``: gradients shared, descriptors concatenated; scikit-image: one call per
scale and image), and 8 px cells (Dalal & Triggs' cell size) on larger colour images
(synthetic 64 px RGB, so the colour path is timed too).

The command line and the table: ``cli/bench_baseline_cmd.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from alexnet.errors import UserError

LARGE_SIDE = 64  # the larger colour images' side: 8 x 8 cells of 8 px
LARGE_SHARE = 4  # of --images (and --reference-images): a quarter as many larger images


def _images(count: int) -> tuple[torch.Tensor, str]:
    from alexnet.data.fashion_mnist import fashion_mnist
    from alexnet.data.synthetic import synthetic

    try:
        ds, name = fashion_mnist(), "fashion-mnist"
    except UserError:
        ds, name = synthetic(classes=10, size=28, train=count, val=1, channels=1), "SYNTHETIC 28 px"
    images = ds.splits["train"][0][:count]
    return images.contiguous(), f"{name}, {len(images)} images of {images.shape[1]}x{images.shape[2]}x{images.shape[3]}"


def _large_images(count: int) -> tuple[torch.Tensor, str]:
    from alexnet.data.synthetic import synthetic

    images = synthetic(classes=10, size=LARGE_SIDE, train=count, val=1, channels=3).splits["train"][0]
    return images.contiguous(), f"SYNTHETIC colour, {len(images)} images of 3x{LARGE_SIDE}x{LARGE_SIDE}"


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds of ``repeat`` calls."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - w), min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu


def _skimage_hog() -> Callable[..., np.ndarray]:
    try:
        from skimage.feature import hog as skimage_hog
    except ImportError:
        raise UserError("bench baseline needs scikit-image as the reference: pip install scikit-image") from None
    return skimage_hog


def _case(name: str, what: str, images: torch.Tensor, ours: Callable[[torch.Tensor], torch.Tensor],
          reference: Callable[[np.ndarray], np.ndarray], reference_images: int, repeat: int) -> dict[str, Any]:  # fmt: skip
    """Time ``ours`` on the whole batch and ``reference`` image by image on its first
    ``reference_images`` (HWC numpy arrays, HW for grey, as scikit-image takes them)."""
    ref = images[: min(reference_images, len(images))]
    ref_np = [im[0].numpy() if im.shape[0] == 1 else im.permute(1, 2, 0).numpy() for im in ref]
    ours_wall, ours_cpu = _timed(lambda: ours(images), repeat)
    ref_wall, ref_cpu = _timed(lambda: [reference(im) for im in ref_np], repeat)
    diff = float(np.abs(ours(ref).numpy() - np.stack([reference(im) for im in ref_np])).max())
    ours_rate, ref_rate = len(images) / ours_wall, len(ref) / ref_wall
    return {
        "case": name, "data": what,
        "ours_images_per_sec": ours_rate, "skimage_images_per_sec": ref_rate, "ratio": ours_rate / ref_rate,
        "ours_cpu_ms_per_image": ours_cpu / len(images) * 1e3, "skimage_cpu_ms_per_image": ref_cpu / len(ref) * 1e3,
        "max_abs_diff": diff,
    }  # fmt: skip


def measure(images: torch.Tensor, what: str, reference_images: int, repeat: int,
            large: tuple[torch.Tensor, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Ours and scikit-image's images/s, CPU ms per image, ratio and largest difference: per HOG
    scale of the ``hog`` baseline on ``images``, both scales as the baseline extracts them, and
    8 px cells on the ``large`` images (with a quarter of ``reference_images``)."""
    skimage_hog = _skimage_hog()
    from alexnet.baselines.features import Hog
    from alexnet.baselines.hog import HogParams, hog
    from alexnet.baselines.pipeline import hog_scales

    def reference(p: HogParams) -> Callable[[np.ndarray], np.ndarray]:
        kw = {"orientations": p.orientations, "pixels_per_cell": (p.cell, p.cell),
              "cells_per_block": (p.block, p.block), "block_norm": "L2-Hys"}  # fmt: skip
        return lambda im: skimage_hog(im, channel_axis=-1 if im.ndim == 3 else None, **kw)

    scales = hog_scales(images.shape[-1])
    rows = [_case(f"{p.cell} px", what, images, lambda x, p=p: hog(x, p), reference(p), reference_images, repeat)
            for p in scales]  # fmt: skip
    refs = [reference(p) for p in scales]
    rows.append(_case("+".join(str(p.cell) for p in scales) + " px (baseline)", what, images, Hog(scales).transform,
                      lambda im: np.concatenate([r(im) for r in refs]), reference_images, repeat))  # fmt: skip
    if large is not None:
        p = HogParams(orientations=9, cell=8, block=2)
        rows.append(_case(f"{p.cell} px colour", large[1], large[0], lambda x: hog(x, p), reference(p),
                          max(1, reference_images // LARGE_SHARE), repeat))  # fmt: skip
    return rows


def benchmark(images: int, reference_images: int, repeat: int) -> dict[str, Any]:
    """``images`` 28 px images (Fashion-MNIST's first, else synthetic) and a quarter as many
    synthetic colour 64 px ones through :func:`measure`: the summary dict (what ``--json`` prints)."""
    _skimage_hog()  # a missing reference fails before any data is built
    data, what = _images(images)
    load_before = os.getloadavg()
    rows = measure(data, what, reference_images, repeat, _large_images(max(1, images // LARGE_SHARE)))
    return {"data": what, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_average": [load_before[0], os.getloadavg()[0]], "scales": rows}  # fmt: skip
