"""Batch transforms: random crops and flips (paper section 4.1), centre crops, normalisation.

Images stay uint8 until a batch is assembled; these functions then work on the whole batch at
once, on whatever device it lives on (the GPU when training on CUDA). Random parameters are
drawn for the *global* batch from a keyed generator (``alexnet.data.seeding``), and each
process takes its own slice, so the numbers do not depend on how a batch is split.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TrainAugment:
    """Training-time augmentation of one dataset.

    Attributes:
        crop: side of the random crops (227 of 256 for ImageNet, section 4.1).
        pad: zero padding added on each side before cropping (small images, where a crop of the
            full side after padding is the usual translation augmentation).
        flip: random horizontal reflections with probability 1/2 (section 4.1).
    """

    crop: int
    pad: int = 0
    flip: bool = True


@dataclass(frozen=True)
class CropParams:
    """Per-image crop offsets, flips (shape ``(B,)``) and colour offsets of one batch."""

    tops: torch.Tensor
    lefts: torch.Tensor
    flips: torch.Tensor
    colour: torch.Tensor | None = None  # (B, 3) RGB offsets of PCA colour noise, if any

    def slice(self, start: int, stop: int) -> CropParams:
        """The parameters of images ``start:stop`` of the batch (one process's share)."""
        colour = self.colour[start:stop] if self.colour is not None else None
        return CropParams(self.tops[start:stop], self.lefts[start:stop], self.flips[start:stop], colour)


# Test-time views and the patches each averages per image (section 4.1): the centre crop; it
# and its mirror; the four corners, the centre and their mirrors.
EVAL_VIEWS = {"centre": 1, "flip": 2, "ten-crop": 10}


def draw_crop_params(aug: TrainAugment, image_side: int, count: int, gen: torch.Generator) -> CropParams:
    """Uniform crop offsets over every position of the padded image, and fair-coin flips."""
    span = image_side + 2 * aug.pad - aug.crop + 1
    if span < 1:
        raise ValueError(f"crop {aug.crop} does not fit in images of side {image_side} (+{aug.pad} padding)")
    tops = torch.randint(0, span, (count,), generator=gen)
    lefts = torch.randint(0, span, (count,), generator=gen)
    flips = torch.rand(count, generator=gen) < 0.5 if aug.flip else torch.zeros(count, dtype=torch.bool)
    return CropParams(tops, lefts, flips)


def crop_batch(images: torch.Tensor, params: CropParams, size: int, pad: int = 0) -> torch.Tensor:
    """Crop (and mirror where ``params.flips``) every image of an ``N,C,H,W`` batch.

    One gather for the whole batch; the result is ``N,C,size,size`` in channels_last layout.
    """
    if pad:
        images = F.pad(images, (pad, pad, pad, pad))
    device = images.device
    ar = torch.arange(size, device=device)
    flips = params.flips.to(device)
    rows = params.tops.to(device)[:, None] + ar
    cols = params.lefts.to(device)[:, None] + torch.where(flips[:, None], size - 1 - ar, ar)
    batch = torch.arange(images.shape[0], device=device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (N, size, size, C).
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def crop_normalize_nhwc(
    images: torch.Tensor,
    tops: list[int],
    lefts: list[int],
    flips: list[bool],
    size: int,
    *,
    mean_image: torch.Tensor | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop, mirror, convert to float and normalise a CPU batch stored channels_last, image by image.

    The CPU twin of ``crop_batch`` + normalisation, with identical results: ``images`` is uint8
    ``N,C,H,W`` whose storage is ``N,H,W,C`` (what the prepared-data loader yields); image ``i``
    is cropped at ``(tops[i], lefts[i])``, mirrored where ``flips[i]``, then either the same window
    of ``mean_image`` (``C,H,W``, 0-255 units) is subtracted or ``(x - mean) / std`` per channel,
    and ``shift`` (``N,C``, already in output units) is added. Each step is one pass over rows of
    ``size*C`` contiguous values while the image is in cache, about ten times cheaper on a CPU
    than the batched gather (figures: ``docs/pipeline.md``). Runs with intra-op parallelism off
    in the calling thread (see :func:`single_threaded_ops`). Returns float32 ``N,C,size,size``
    in channels_last layout.
    """
    n, c, _, w = images.shape
    src = images.permute(0, 2, 3, 1)
    out = torch.empty((n, size, size, c), dtype=torch.float32)
    rows = out.view(n, size, size * c)
    with single_threaded_ops():
        if mean_image is not None:
            m = mean_image.to(torch.float32).permute(1, 2, 0).contiguous()
            m_flipped = m.flip(1)
        else:
            assert mean is not None and std is not None
            mean_row = torch.tensor(mean, dtype=torch.float32).repeat(size)
            std_row = torch.tensor(std, dtype=torch.float32).repeat(size)
        shift_rows = shift.to(torch.float32).repeat(1, size) if shift is not None else None
        for i in range(n):
            t, left = tops[i], lefts[i]
            crop = src[i, t : t + size, left : left + size]
            o = out[i]
            if flips[i]:
                crop = crop.flip(1)
            o.copy_(crop)
            if mean_image is not None:
                if flips[i]:  # the mirrored window of the mean image is a window of its mirror
                    o.sub_(m_flipped[t : t + size, w - left - size : w - left])
                else:
                    o.sub_(m[t : t + size, left : left + size])
            else:
                rows[i].sub_(mean_row).div_(std_row)
            if shift_rows is not None:
                rows[i].add_(shift_rows[i])
    return out.permute(0, 3, 1, 2)


def is_nhwc(images: torch.Tensor) -> bool:
    """Whether a 4-D tensor's storage is ``N,H,W,C`` (channels_last), as the fast CPU path needs."""
    return images.ndim == 4 and images.permute(0, 2, 3, 1).is_contiguous()


def _find_openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime PyTorch was loaded with (Linux), for per-thread thread-count control."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line or "libiomp" in line}
    except OSError:
        return None
    torch_dir = os.path.dirname(torch.__file__)
    for path in sorted(paths, key=lambda p: not p.startswith(torch_dir)):  # torch's own runtime first
        try:
            lib = ctypes.CDLL(path)
            lib.omp_get_max_threads.restype = ctypes.c_int
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            return lib
        except (OSError, AttributeError):
            continue
    return None


_OPENMP: list[ctypes.CDLL | None] = []


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """Run this thread's torch CPU ops without intra-op parallelism, other threads untouched.

    Image-sized ops (a few 10^5 values, tens of microseconds) lose when each one starts an
    OpenMP team: on a loaded 2-core machine waking the second thread costs milliseconds per op
    (measured: 5-11 ms for a 60 us copy), and loader threads that each start teams oversubscribe
    the cores. ``torch.set_num_threads`` is process-wide (and resets MKL); OpenMP's
    ``omp_set_num_threads`` is per thread, so it is called here on the runtime torch uses and
    restored on exit. A no-op where that runtime cannot be found (the ops then stay correct,
    only slower).
    """
    if not _OPENMP:
        _OPENMP.append(_find_openmp())
    omp = _OPENMP[0]
    if omp is None:
        yield
        return
    torch.get_num_threads()  # torch sets each thread's OpenMP count on first use: let it happen first
    previous = omp.omp_get_max_threads()
    omp.omp_set_num_threads(1)
    try:
        yield
    finally:
        omp.omp_set_num_threads(previous)


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window of an ``N,C,H,W`` batch (a view)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


class Normalizer:
    """uint8 images -> float, minus mean, divided by std (per channel, in 0-255 units)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() - mean).div_(std)


def ten_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's ten test patches (section 4.1): four corners and the centre, and their mirrors.

    ``N,C,H,W`` -> ``10*N,C,size,size``, crop-major: rows ``k*N .. (k+1)*N`` hold crop ``k`` of
    every image, in the order top-left, top-right, bottom-left, bottom-right, centre, then the
    same five mirrored.
    """
    h, w = images.shape[-2:]
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    five = [images[..., t : t + size, l : l + size] for t, l in corners]
    return torch.cat(five + [c.flip(-1) for c in five])


PCA_MODES = ("paper", "std", "off")


@dataclass(frozen=True)
class ColourStats:
    """Training-set statistics behind the paper's input normalisation and colour noise.

    Attributes:
        mean_image: per-pixel mean, ``C x S x S`` in 0-255 units ("subtracting the mean activity
            over the training set from each pixel", section 2).
        eigvals: eigenvalues of the 3x3 covariance of RGB pixel values (0-255 units squared),
            largest first.
        eigvecs: the matching eigenvectors as columns, each signed so that its largest
            component is positive.

    Both come from :func:`colour_eigen`, whichever way the covariance was summed.
    """

    mean_image: torch.Tensor
    eigvals: torch.Tensor | None = None
    eigvecs: torch.Tensor | None = None


def colour_eigen(cov: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of a 3x3 colour covariance, in the one convention used
    everywhere (manifests of ``prepare``, in-memory datasets, PCA colour noise):

    * eigenvalues in descending order (the first principal component first);
    * eigenvectors as columns (``vectors[:, k]`` belongs to ``values[k]``), each with the sign
      that makes its largest-magnitude component positive, so equal data give equal vectors.

    float64 arrays; the order decides which of the per-image draws alpha_i goes with which
    component (section 4.1), so it must not depend on where the statistics were computed.
    """
    c = np.asarray(cov.detach().cpu().double() if isinstance(cov, torch.Tensor) else cov, dtype=np.float64)
    values, vectors = np.linalg.eigh(c)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    for k in range(vectors.shape[1]):
        if vectors[np.argmax(np.abs(vectors[:, k])), k] < 0:
            vectors[:, k] = -vectors[:, k]
    return values, vectors


def pca_colour_shift(alphas: torch.Tensor, stats: ColourStats, mode: str) -> torch.Tensor:
    """Per-image RGB offsets ``[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T`` (section 4.1), shape ``(N, 3)``,
    in 0-255 pixel units.

    ``paper``: alpha_i * lambda_i as printed, with the covariance of RGB values in [0, 1] (the
    formula is not scale-free; on 0-255 values it would shift colours by hundreds of grey
    levels, on [0, 1] values by about one, the "small" change the paper describes).
    ``std``: alpha_i * sqrt(lambda_i), the authors' later code (cuda-convnet2) and
    fb.resnet.torch; scale-free, a few grey levels. ``off``: zeros.
    """
    if mode == "off" or stats.eigvals is None or stats.eigvecs is None:
        return torch.zeros(alphas.shape[0], 3, dtype=torch.float32)
    if mode not in PCA_MODES:
        raise ValueError(f"PCA colour mode must be one of {', '.join(PCA_MODES)}, got {mode!r}")
    # eigvals are in (0-255 units)^2: lambda on [0, 1] values is eigvals / 255^2, and the offset
    # comes back to 0-255 units times 255, hence eigvals / 255 for the paper's form.
    scale = stats.eigvals / 255.0 if mode == "paper" else stats.eigvals.clamp_min(0).sqrt()
    # sum_k alpha_k scale_k p_k, written out: a (N,3)x(3,3) matmul goes through BLAS, whose
    # thread team cost 8-15 ms per call on a loaded 2-core machine (once per training step).
    return ((alphas * scale)[:, None, :] * stats.eigvecs[None, :, :]).sum(dim=2)
