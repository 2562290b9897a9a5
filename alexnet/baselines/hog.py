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

All of this is tensor arithmetic over the whole batch (torch, no per-image loop):
``alexnet bench baseline`` measures it beside scikit-image called per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# L2-Hys (Dalal & Triggs 2005, section 6.4): clip the L2-normalised block at 0.2, renormalise.
L2HYS_CLIP = 0.2
EPS = 1e-5  # scikit-image's eps, so the two agree


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


def gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column gradients (``N,H,W`` float32) of ``N,C,H,W`` images; colour images keep,
    per pixel, the channel of largest magnitude (Dalal & Triggs section 6.2)."""
    x = images.float()
    g_row = torch.zeros_like(x)
    g_col = torch.zeros_like(x)
    g_row[:, :, 1:-1, :] = x[:, :, 2:, :] - x[:, :, :-2, :]
    g_col[:, :, :, 1:-1] = x[:, :, :, 2:] - x[:, :, :, :-2]
    if x.shape[1] == 1:
        return g_row[:, 0], g_col[:, 0]
    best = torch.hypot(g_row, g_col).argmax(dim=1, keepdim=True)  # first maximum on ties, as numpy
    return g_row.gather(1, best)[:, 0], g_col.gather(1, best)[:, 0]


def cell_histograms(images: torch.Tensor, p: HogParams,
                    grads: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """Orientation histograms ``N, cells_row, cells_col, orientations`` (float32);
    ``grads``: the images' :func:`gradients`, when already computed."""
    g_row, g_col = grads if grads is not None else gradients(images)
    n, h, w = g_row.shape
    ch, cw = p.cells(h), p.cells(w)
    g_row, g_col = g_row[:, : ch * p.cell, : cw * p.cell], g_col[:, : ch * p.cell, : cw * p.cell]
    magnitude = torch.hypot(g_row, g_col)
    # Orientation in float64, bin edges rounded to float32: exactly scikit-image's comparisons.
    angle = torch.rad2deg(torch.atan2(g_row.double(), g_col.double())).remainder(180.0)
    edges = torch.tensor([180.0 / p.orientations * i for i in range(1, p.orientations)], dtype=torch.float32).double()
    bins = torch.bucketize(angle, edges, right=True)  # bin i holds [edge_i, edge_{i+1})
    rows = torch.arange(ch * p.cell) // p.cell
    cols = torch.arange(cw * p.cell) // p.cell
    cell_index = (rows[:, None] * cw + cols[None, :]) * p.orientations
    index = (cell_index + bins).reshape(n, -1)
    hist = torch.zeros(n, ch * cw * p.orientations, dtype=torch.float32)
    hist.scatter_add_(1, index, magnitude.reshape(n, -1))
    return hist.view(n, ch, cw, p.orientations)


def block_normalise(hist: torch.Tensor, block: int) -> torch.Tensor:
    """L2-Hys-normalised blocks ``N, blocks_row, blocks_col, block, block, orientations``."""
    blocks = hist.unfold(1, block, 1).unfold(2, block, 1)  # N, br, bc, o, block, block
    blocks = blocks.permute(0, 1, 2, 4, 5, 3)
    flat = blocks.reshape(*blocks.shape[:3], -1)
    flat = flat / torch.sqrt((flat * flat).sum(-1, keepdim=True) + EPS * EPS)
    flat = flat.clamp(max=L2HYS_CLIP)
    flat = flat / torch.sqrt((flat * flat).sum(-1, keepdim=True) + EPS * EPS)
    return flat.reshape(blocks.shape)


def hog(images: torch.Tensor, p: HogParams = HogParams(),
        grads: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """HOG descriptors (``N x p.dim(H, W)`` float32) of uint8 (or float) ``N,C,H,W`` images;
    ``grads``: their :func:`gradients`, to share them between several cell sizes."""
    if images.ndim != 4:
        raise ValueError(f"expected N,C,H,W images, got shape {tuple(images.shape)}")
    p.dim(images.shape[2], images.shape[3])  # raises if too small
    return block_normalise(cell_histograms(images, p, grads), p.block).reshape(len(images), -1)

