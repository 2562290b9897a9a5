"""Dense SIFT (Lowe 2004, in the dense form of vlfeat's ``vl_dsift`` / ``vl_phow``), vectorised over a batch.

For each bin size ``s`` (one "scale"), every ``step`` pixels a descriptor of 4 x 4 spatial bins of
``s x s`` pixels and 8 orientation bins (128 dims):

1. the intensity image (grey, or the mean of R, G, B) in [0, 1] is smoothed by a Gaussian of
   standard deviation ``s / 6`` (``vl_phow``'s ``SIZE / MAGNIF`` with magnif 6), so that coarse
   scales see coarse gradients;
2. centred gradients; each pixel votes its gradient magnitude into the two nearest of 8 signed
   orientation bins over 360 degrees (linear interpolation in orientation, Lowe section 6.1);
3. bilinear spatial binning: a pixel at distance ``(dy, dx)`` from a bin centre adds weight
   ``(1 - |dy|/s)(1 - |dx|/s)`` to it, times a Gaussian window of standard deviation 2 bins (half
   the descriptor's width, Lowe section 6.1) centred on the descriptor. Both factors are
   separable, so this is one 1-D convolution along x and one along y per bin column and row
   (``vl_dsift``'s own method), done here as two grouped ``conv2d`` calls with the dense step as
   stride: no per-image or per-descriptor loop;
4. L2 normalisation, clipping at 0.2, L2 again (Lowe section 6.1); descriptors of patches without
   contrast (mean gradient magnitude below :data:`CONTRAST` per pixel) are set to zero instead
   of amplifying noise (``vl_phow``'s contrast threshold), and
5. optionally RootSIFT (Arandjelovic & Zisserman, CVPR 2012): L1-normalise and take the square
   root, so that Euclidean distances (and the diagonal GMM after PCA) compare descriptors with
   the Hellinger kernel.

Descriptor geometry: bin centres at ``x0 + i*s`` (``i = 0..3``) with ``x0 = 0, step, ...`` while
the last bin centre lies inside the image (``vl_dsift``'s bounds); the triangle tails past the
border see zeros.

Colour (:func:`colour_descriptors`): for 3-channel images, the mean and standard deviation of R,
G and B in each of the 4 x 4 bins of the same patches (96 dims), the local colour statistics of
Perronnin, Sanchez & Mensink (ECCV 2010) and of the 2011 ILSVRC entry, encoded separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BINS = 4  # spatial bins per side (Lowe 2004: 4 x 4)
ORIENTATIONS = 8  # Lowe 2004: 8 orientation bins
CLIP = 0.2  # Lowe 2004 section 6.1: clip normalised entries at 0.2, renormalise
MAGNIF = 6.0  # vl_phow: smoothing sigma = bin size / magnif
WINDOW_BINS = 2.0  # Gaussian window sigma, in bins: half the 4-bin descriptor width (Lowe 2004)
CONTRAST = 0.005  # vl_phow's contrast threshold: mean gradient magnitude per pixel (intensity in [0, 1])
SIFT_DIM = BINS * BINS * ORIENTATIONS
COLOUR_DIM = BINS * BINS * 3 * 2


@dataclass(frozen=True)
class DsiftParams:
    """Dense SIFT geometry: bin sizes (one scale each) and the step between descriptors, in pixels."""

    bins: tuple[int, ...] = (4, 6, 8)
    step: int = 4
    root: bool = True

    @classmethod
    def for_side(cls, side: int, root: bool = True) -> DsiftParams:
        """Scales for square images of ``side`` px: bin sizes ``b, 1.5b, 2b`` with
        ``b = max(3, round(side / 56))`` and step ``max(2, round(side / 56))``.

        At 224-256 px this is ``vl_phow``'s setting (bins 4-5 to 8-10 px, step 4-5: 8,013
        descriptors per 224 px image); at 28 px (Fashion-MNIST) bins of 3, 4 and 6 px (patches
        covering 43%, 57% and 86% of the image) every 2 px, 189 descriptors: a 4-bin patch must
        still hold several pixels per bin, so small images get relatively large patches.
        """
        b = max(3, round(side / 56))
        bins = tuple(sorted({b, round(1.5 * b), 2 * b}))
        fitting = tuple(s for s in bins if (BINS - 1) * s < side) or (max(1, (side - 1) // BINS),)  # tiny images
        return cls(bins=fitting, step=max(2, round(side / 56)), root=root)

    def positions(self, side: int, s: int) -> int:
        """Descriptors per row (and per column) at bin size ``s`` on a ``side`` px image."""
        span = side - (BINS - 1) * s  # first bin centres 0 .. side-1-3s
        return max(0, (span - 1) // self.step + 1) if span > 0 else 0

    def centres(self, side: int) -> torch.Tensor:
        """Descriptor centres ``T x 2`` (row, col) in pixels, in the order :func:`dsift` returns them."""
        out = []
        for s in self.bins:
            p = torch.arange(self.positions(side, s)) * self.step + 1.5 * s
            out.append(torch.cartesian_prod(p, p).float())
        return torch.cat(out)


def intensity(images: torch.Tensor) -> torch.Tensor:
    """``N,1,H,W`` float32 in [0, 1]: grey images as they are, colour ones as the mean of R, G, B."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x.mean(1, keepdim=True) if x.shape[1] != 1 else x


def _blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """``size x size``: Gaussian smoothing along one axis with edges replicated, as a matrix."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    src = (torch.arange(size)[:, None] + torch.arange(-r, r + 1)[None, :]).clamp(0, size - 1)  # replicated edges
    m = torch.zeros(size, size, dtype=torch.float64)
    m.scatter_add_(1, src, k.expand(size, -1).contiguous())
    return m.float()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``N,C,H,W`` (edges replicated), as two matrix products."""
    if sigma < 0.1:
        return x
    return _blur_matrix(x.shape[-2], sigma) @ x @ _blur_matrix(x.shape[-1], sigma).T


def orientation_maps(grey: torch.Tensor) -> torch.Tensor:
    """``N,8,H,W``: each pixel's gradient magnitude split between its two nearest orientation bins."""
    g = grey[:, 0]
    gy, gx = torch.zeros_like(g), torch.zeros_like(g)
    gy[:, 1:-1] = (g[:, 2:] - g[:, :-2]) / 2
    gx[:, :, 1:-1] = (g[:, :, 2:] - g[:, :, :-2]) / 2
    magnitude = torch.hypot(gx, gy)
    t = torch.atan2(gy, gx).remainder(2 * math.pi) * (ORIENTATIONS / (2 * math.pi))
    lower = t.floor()
    frac = t - lower
    lower = lower.long() % ORIENTATIONS
    upper = (lower + 1) % ORIENTATIONS
    bins = torch.arange(ORIENTATIONS).view(1, -1, 1, 1)
    maps = (lower[:, None] == bins) * (magnitude * (1 - frac))[:, None]
    maps += (upper[:, None] == bins) * (magnitude * frac)[:, None]
    return maps


def bin_kernels(s: int) -> torch.Tensor:
    """``4 x (5s-1)``: for bin column (or row) ``i``, the triangle of the bilinear binning around
    its centre times the descriptor's Gaussian window, over offsets ``-(s-1) .. 4s-1`` from the
    first bin centre."""
    u = torch.arange(-(s - 1), 4 * s, dtype=torch.float64)
    centre = (BINS - 1) / 2 * s
    window = torch.exp(-((u - centre) ** 2) / (2 * (WINDOW_BINS * s) ** 2))
    rows = [(1 - (u - i * s).abs() / s).clamp(min=0) * window for i in range(BINS)]
    return torch.stack(rows).float()


def _placement(kernel: torch.Tensor, size: int, s: int, step: int) -> torch.Tensor:
    """``size x 4 x P``: ``kernel`` (:func:`bin_kernels`) placed at every dense position, i.e. the
    banded matrix of the strided 1-D convolution (pixels past the border simply absent)."""
    p = (size - (BINS - 1) * s - 1) // step + 1
    u = torch.arange(size)[:, None] - torch.arange(p)[None, :] * step + (s - 1)  # kernel offset
    valid = (u >= 0) & (u < kernel.shape[1])
    taps = kernel[:, u.clamp(0, kernel.shape[1] - 1)] * valid  # 4, size, P
    return taps.permute(1, 0, 2).contiguous()


def _binned(maps: torch.Tensor, kernel: torch.Tensor, s: int, step: int) -> torch.Tensor:
    """``N, C, 4, 4, P, P``: per channel, the 4 x 4 spatial bins (row-bin, col-bin) of every dense
    position, by separable convolution with ``kernel`` (:func:`bin_kernels`) at stride ``step``,
    written as two matrix products with the banded convolution matrices (faster than grouped
    ``conv2d`` on CPU)."""
    a = _placement(kernel, maps.shape[-1], s, step)  # W, 4, P
    b = _placement(kernel, maps.shape[-2], s, step)  # H, 4, P
    cols = torch.einsum("nchw,wip->nchip", maps, a)
    return torch.einsum("nchip,hjq->ncjiqp", cols, b)


def _normalise(d: torch.Tensor, patch_pixels: int, root: bool) -> torch.Tensor:
    """Lowe's normalise / clip / renormalise of ``... x 128`` rows; zero where there is no contrast."""
    mass = d.sum(-1, keepdim=True)  # total windowed gradient magnitude of the patch
    flat = mass < CONTRAST * patch_pixels
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    d = d.clamp(max=CLIP)
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    if root:
        d = torch.sqrt(d / d.sum(-1, keepdim=True).clamp(min=1e-12))
    return d.masked_fill(flat, 0.0)


def dsift(images: torch.Tensor, p: DsiftParams) -> torch.Tensor:
    """Dense SIFT descriptors ``N x T x 128`` (float32) of ``N,C,H,W`` square images (uint8 0-255 or
    float 0-1); the ``T`` descriptors are ordered by scale, then row, then column, as
    :meth:`DsiftParams.centres`. Entry order: bin row, bin column, orientation (as Lowe's)."""
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square N,C,H,W images, got shape {tuple(images.shape)}")
    grey = intensity(images)
    out = []
    for s in p.bins:
        if p.positions(grey.shape[-1], s) == 0:
            continue
        maps = orientation_maps(_gaussian_blur(grey, s / MAGNIF))
        b = _binned(maps, bin_kernels(s), s, p.step)  # N, 8, 4, 4, P, P
        d = b.permute(0, 4, 5, 2, 3, 1).reshape(len(images), -1, SIFT_DIM)  # N, P*P, (row, col, orientation)
        out.append(_normalise(d, (BINS * s) ** 2, p.root))
    return torch.cat(out, dim=1)


def colour_descriptors(images: torch.Tensor, p: DsiftParams) -> torch.Tensor:
    """``N x T x 96``: mean and standard deviation of R, G, B (in [0, 1]) in each 4 x 4 bin of the
    same patches as :func:`dsift` (bins of ``s x s`` pixels around the bin centres, no window; at
    the border, of the bin's pixels inside the image), ordered as its output."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    out = []
    for s in p.bins:
        if p.positions(x.shape[-1], s) == 0:
            continue
        box = torch.zeros(BINS, 5 * s - 1)
        for i in range(BINS):  # the s pixels nearest bin centre i (offsets i*s - s//2 ..)
            start = (s - 1) + i * s - s // 2
            box[i, start : start + s] = 1.0 / s
        # Bins of the border positions reach past the image: statistics of the pixels inside it.
        inside = _binned(torch.ones(1, 1, *x.shape[-2:]), box, s, p.step).clamp(min=1e-6)
        mean = _binned(x, box, s, p.step) / inside
        sq = _binned(x * x, box, s, p.step) / inside
        std = (sq - mean * mean).clamp(min=0).sqrt()
        both = torch.stack([mean, std], dim=2)  # N, 3, 2, 4, 4, P, P
        out.append(both.permute(0, 5, 6, 3, 4, 1, 2).reshape(len(images), -1, COLOUR_DIM))
    return torch.cat(out, dim=1)
