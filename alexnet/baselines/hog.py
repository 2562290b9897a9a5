"""Histograms of oriented gradients (Dalal & Triggs, CVPR 2005), vectorised over a batch.

The recipe of the paper, in the parametrisation of ``skimage.feature.hog`` (whose output this
matches within 1e-5, grey and colour, even and odd cell sizes; ``tests/test_baselines_hog.py``):

1. centred gradients ``[-1, 0, 1]`` along rows and columns (zero on the border rows/columns);
   for colour images, at each pixel the channel with the largest gradient magnitude;
2. unsigned orientation in [0, 180) degrees, ``orientations`` equal bins, each pixel votes its
   gradient magnitude into its bin (hard binning, as scikit-image; Dalal & Triggs also
   interpolate bilinearly) in its cell of ``cell x cell`` pixels (pixels past the last whole
   cell are dropped);
3. blocks of ``block x block`` cells with a stride of one cell, each normalised with L2-Hys
   (L2, clip at 0.2, L2 again; eps 1e-5), which is the paper's best block normalisation.

All of this is tensor arithmetic over chunks of the batch (torch, no per-image loop), with two
exact shortcuts for uint8 images, whose gradients are integer pairs in [-255, 255]^2: each pixel's
orientation bin and magnitude are looked up in tables of all 511 x 511 pairs (computed once with
the float formulas), and the colour channel is chosen by a table of scikit-image's own ``np.hypot``
ranks. Chunks fit a core's L2 cache and run in parallel threads, one single-threaded chunk per
torch thread (see :func:`_for_chunks`). ``alexnet bench baseline`` measures it beside
scikit-image called per image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

# L2-Hys (Dalal & Triggs 2005, section 6.4): clip the L2-normalised block at 0.2, renormalise.
L2HYS_CLIP = 0.2
EPS = 1e-5  # scikit-image's eps, so the two agree
# Work on chunks of this many pixel values (512 KiB of float32) at a time: see _for_chunks.
CHUNK_PIXELS = 1 << 17


@dataclass(frozen=True)
class HogParams:
    """HOG geometry: ``orientations`` bins over 0-180 degrees, square cells and blocks."""

    orientations: int = 9
    cell: int = 8
    block: int = 2

    def cells(self, side: int) -> int:
        return side // self.cell

    def dim(self, height: int, width: int) -> int:
        """Length of the descriptor of an ``height x width`` image."""
        rows = self.cells(height) - self.block + 1
        cols = self.cells(width) - self.block + 1
        if rows <= 0 or cols <= 0:
            raise ValueError(f"images of {height}x{width} are too small for HOG blocks of "
                             f"{self.block}x{self.block} cells of {self.cell} px")  # fmt: skip
        return rows * cols * self.block * self.block * self.orientations


# uint8 images (the only kind the baselines feed in) have integer centred differences in
# [-255, 255]: the orientation bin and the magnitude of a pixel are functions of the pair
# (g_row, g_col) alone, so they are tabulated once for the 511 x 511 pairs, each entry computed with
# the float formulas of the general path (``_magnitude``, ``_orientation_bins``), and looked up with
# one gather per pixel: bit-for-bit the general path's values, without its per-pixel float64
# atan2 (the bulk of its cost).
GRAD_MAX = 255
# code = (g_row + 255) * 512 + (g_col + 255): a power-of-two stride (one unused column of 512),
# so that a code splits back into its pair with a shift and a mask, not an integer division.
_COL_BITS = 9
_ZERO = (GRAD_MAX << _COL_BITS) + GRAD_MAX  # the code of the gradient (0, 0)


def _magnitude(g_row: torch.Tensor, g_col: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude, float32 (what each pixel votes)."""
    return torch.hypot(g_row.float(), g_col.float())


def _orientation_bins(g_row: torch.Tensor, g_col: torch.Tensor, orientations: int) -> torch.Tensor:
    """Bin (int64) of the unsigned orientation of each gradient, exactly scikit-image's: the angle
    ``rad2deg(atan2(g_row, g_col)) % 180`` in float64, compared with bin edges rounded to float32
    (its Cython keeps them in C floats); bin ``i`` holds ``[edge_i, edge_{i+1})``."""
    angle = torch.rad2deg(torch.atan2(g_row.double(), g_col.double())).remainder(180.0)
    edges = torch.tensor([180.0 / orientations * i for i in range(1, orientations)], dtype=torch.float32)
    return torch.bucketize(angle, edges.double(), right=True)


def _code_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Every integer gradient pair (float64), in code order (see :func:`_codes`; the unused
    column of codes holds g_col = 256)."""
    g_row = torch.arange(-GRAD_MAX, GRAD_MAX + 1, dtype=torch.float64)
    g_col = torch.arange(-GRAD_MAX, -GRAD_MAX + (1 << _COL_BITS), dtype=torch.float64)
    g_row, g_col = torch.meshgrid(g_row, g_col, indexing="ij")
    return g_row.flatten(), g_col.flatten()


@functools.cache
def _magnitude_table() -> torch.Tensor:
    """``_magnitude`` of every code (float32, 1 MiB)."""
    return _magnitude(*_code_pairs())


@functools.cache
def _bin_table(orientations: int) -> torch.Tensor:
    """``_orientation_bins`` of every code, as uint8 (a quarter of the memory traffic of int64)."""
    if orientations > 255:
        raise ValueError(f"at most 255 orientation bins, got {orientations}")
    return _orientation_bins(*_code_pairs(), orientations).to(torch.uint8)


@functools.cache
def _channel_rank_table() -> torch.Tensor:
    """Colour images keep, per pixel, the channel that scikit-image keeps: the first maximum of
    ``np.hypot`` in float64. Not a torch hypot: numpy's (the C library's) can differ by one ulp
    between pairs of equal ``g_row^2 + g_col^2``, e.g. (28, 47) and (17, 52), and that decides ties.
    Stored as each code's rank among the 22,089 distinct values (equal values, equal ranks: the
    same order), int16: 512 KiB, which a gather reads much faster than 2 MiB of float64."""
    g_row, g_col = _code_pairs()
    rank = torch.unique(torch.from_numpy(np.hypot(g_row.numpy(), g_col.numpy())), return_inverse=True)[1]
    return rank.to(torch.int16)


def gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column centred gradients (``N,H,W``; zero on the border rows/columns) of ``N,C,H,W``
    images; colour images keep, per pixel, the channel of largest magnitude (Dalal & Triggs
    section 6.2; first maximum on ties, as numpy). uint8 images give exact int32 gradients (what
    :func:`pixel_votes` looks its tables up with), others float32."""
    n, c, h, w = images.shape
    dtype = torch.int32 if images.dtype == torch.uint8 else torch.float32
    g_row, g_col = torch.empty(n, h, w, dtype=dtype), torch.empty(n, h, w, dtype=dtype)

    def chunk(s: slice) -> None:
        if dtype == torch.int32 and c > 1:
            g_row[s], g_col[s] = _strongest_channel_exact(images[s])
        else:
            g_row[s], g_col[s] = _strongest_channel(*_channel_gradients(images[s], dtype))

    _for_chunks(n, c * h * w, chunk)
    return g_row, g_col


def _for_chunks(n: int, pixels: int, fn: Callable[[slice], None]) -> None:
    """``fn(chunk)`` for consecutive slices of ``n`` images of ``pixels`` values each, with so few
    images per chunk that each per-pixel tensor stays within a core's L2 cache (1.3x faster than
    whole batches of 3,000 Fashion-MNIST images, at one thread).

    With several torch threads, the chunks run in parallel, one per thread, each op single-threaded,
    instead of every op split over all threads: each op split so waits at a barrier for its
    slowest thread, and on a shared machine (more runnable threads than cores) those waits made
    the extraction 15-20x slower at 2 threads than at 1 (load average 8 on 2 cores); chunks never
    wait for one another.
    """
    step = max(1, CHUNK_PIXELS // pixels)
    chunks = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    threads = torch.get_num_threads()
    if threads == 1 or len(chunks) <= 1:
        for c in chunks:
            fn(c)
        return
    # torch.set_num_threads(1) in a pool thread makes that thread's ops single-threaded; it also
    # sets torch's default for threads started later, which is restored once the pool is done.
    try:
        with ThreadPoolExecutor(min(threads, len(chunks)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for _ in pool.map(fn, chunks):
                pass
    finally:
        torch.set_num_threads(threads)


def _channel_gradients(images: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred gradients of every channel, ``N,C,H,W`` of ``dtype``."""
    x = images.to(dtype)
    g_row, g_col = torch.zeros_like(x), torch.zeros_like(x)
    torch.sub(x[:, :, 2:, :], x[:, :, :-2, :], out=g_row[:, :, 1:-1, :])
    torch.sub(x[:, :, :, 2:], x[:, :, :, :-2], out=g_col[:, :, :, 1:-1])
    return g_row, g_col


def _strongest_channel(g_row: torch.Tensor, g_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the gradient (``N,H,W``) of the channel of largest float32 magnitude, the first
    on ties (numpy's argmax; not torch's ``argmax(dim=1)``, ~15x slower over 3 channels)."""
    if g_row.shape[1] == 1:
        return g_row[:, 0], g_col[:, 0]
    key = _magnitude(g_row, g_col)
    best, best_row, best_col = key[:, 0], g_row[:, 0], g_col[:, 0]
    for ch in range(1, g_row.shape[1]):
        stronger = key[:, ch] > best  # strictly: the first maximum wins ties
        best = torch.where(stronger, key[:, ch], best)
        best_row = torch.where(stronger, g_row[:, ch], best_row)
        best_col = torch.where(stronger, g_col[:, ch], best_col)
    return best_row, best_col


def _strongest_channel_exact(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_strongest_channel` of uint8 colour images, exactly scikit-image's choice: channels
    compared by :func:`_channel_rank_table`, the winner's gradient carried as its code. Integer
    arithmetic throughout, ``code += stronger * (code_ch - code)`` rather than ``torch.where``
    (which this torch build runs unvectorised, ~7x slower)."""
    x = images.to(torch.int32)
    codes = torch.full_like(x, _ZERO)  # zero gradients on the border rows and columns
    codes[:, :, 1:-1, :].add_(x[:, :, 2:, :] - x[:, :, :-2, :], alpha=1 << _COL_BITS)
    codes[:, :, :, 1:-1].add_(x[:, :, :, 2:] - x[:, :, :, :-2])
    rank = _channel_rank_table().index_select(0, codes.flatten()).view(codes.shape)
    best, code = rank[:, 0], codes[:, 0]
    for ch in range(1, codes.shape[1]):
        stronger = rank[:, ch] > best  # strictly: the first maximum wins ties
        best = torch.maximum(best, rank[:, ch])
        code = code + stronger * (codes[:, ch] - code)
    return (code >> _COL_BITS) - GRAD_MAX, (code & ((1 << _COL_BITS) - 1)) - GRAD_MAX


def _codes(g_row: torch.Tensor, g_col: torch.Tensor) -> torch.Tensor:
    """Table index (int32) of integer gradients: ``(g_row + 255) * 512 + g_col + 255``."""
    return torch.add(g_col, g_row, alpha=1 << _COL_BITS).add_(_ZERO)


def pixel_votes(grads: tuple[torch.Tensor, torch.Tensor], orientations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's vote: its gradient magnitude (float32) and its orientation bin (uint8 for
    integer gradients, else int64), ``N,H,W`` each; looked up for integer gradients, else computed."""
    g_row, g_col = grads
    if g_row.is_floating_point():
        return _magnitude(g_row, g_col), _orientation_bins(g_row, g_col, orientations)
    codes = _codes(g_row, g_col).flatten()
    magnitude = _magnitude_table().index_select(0, codes).view(g_row.shape)
    return magnitude, _bin_table(orientations).index_select(0, codes).view(g_row.shape)


def cell_histograms(images: torch.Tensor, p: HogParams,
                    grads: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """Orientation histograms ``N, cells_row, cells_col, orientations`` (float32);
    ``grads``: the images' :func:`gradients`, when already computed."""
    g_row, g_col = grads if grads is not None else gradients(images)
    n, h, w = g_row.shape
    ch, cw = p.cells(h), p.cells(w)
    crop = (g_row[:, : ch * p.cell, : cw * p.cell], g_col[:, : ch * p.cell, : cw * p.cell])
    magnitude, bins = pixel_votes(crop, p.orientations)
    rows = torch.arange(ch * p.cell) // p.cell
    cols = torch.arange(cw * p.cell) // p.cell
    cell_index = (rows[:, None] * cw + cols[None, :]) * p.orientations
    index = (cell_index + bins).reshape(n, -1)  # int64, as scatter_add_ requires
    hist = torch.zeros(n, ch * cw * p.orientations, dtype=torch.float32)
    hist.scatter_add_(1, index, magnitude.reshape(n, -1))
    return hist.view(n, ch, cw, p.orientations)


def block_normalise(hist: torch.Tensor, block: int) -> torch.Tensor:
    """L2-Hys-normalised blocks ``N, blocks_row, blocks_col, block, block, orientations``."""
    blocks = hist.unfold(1, block, 1).unfold(2, block, 1)  # N, br, bc, o, block, block
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).contiguous()  # a copy, normalised in place
    flat = blocks.view(*blocks.shape[:3], -1)
    flat.div_(flat.square().sum(-1, keepdim=True).add_(EPS * EPS).sqrt_()).clamp_(max=L2HYS_CLIP)
    flat.div_(flat.square().sum(-1, keepdim=True).add_(EPS * EPS).sqrt_())
    return blocks


def hog(images: torch.Tensor, p: HogParams = HogParams(),
        grads: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """HOG descriptors (``N x p.dim(H, W)`` float32) of uint8 (or float) ``N,C,H,W`` images;
    ``grads``: their :func:`gradients`, to share them between several cell sizes."""
    if images.ndim != 4:
        raise ValueError(f"expected N,C,H,W images, got shape {tuple(images.shape)}")
    n, h, w = len(images), images.shape[2], images.shape[3]
    out = torch.empty(n, p.dim(h, w))  # raises if too small

    def chunk(s: slice) -> None:
        part = None if grads is None else (grads[0][s], grads[1][s])
        out[s] = block_normalise(cell_histograms(images[s], p, part), p.block).flatten(1)

    _for_chunks(n, images.shape[1] * h * w, chunk)
    return out
