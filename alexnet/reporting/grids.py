"""Pillow image grids: Figure 3's kernels by tower and rows of images (retrieval, examples)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

BACKGROUND = (255, 255, 255)
SAME, DIFFERENT = (42, 157, 63), (192, 57, 43)


def kernel_image(kernel: torch.Tensor, scale: int) -> Image.Image:
    """One ``C x h x w`` kernel, contrast-normalised on its own (its min to 0, max to 255, all
    channels together so colours keep their balance), enlarged ``scale`` times."""
    w = kernel.float()
    lo, hi = float(w.min()), float(w.max())
    norm = (w - lo) / (hi - lo) if hi > lo else torch.full_like(w, 0.5)
    pixels = (norm * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, "L" if pixels.shape[2] == 1 else "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def kernel_grid(towers: Sequence[torch.Tensor], per_row: int = 16, target: int = 44, gap: int = 2,
                tower_gap: int = 14) -> Image.Image:  # fmt: skip
    """Figure 3: every tower's kernels in rows of ``per_row``, tower 1 above tower 2.
    Each kernel is drawn about ``target`` pixels wide (11x11 kernels at 4x)."""
    h, w = towers[0].shape[-2:]
    scale = max(1, target // max(h, w))
    kh, kw = h * scale, w * scale
    rows_per = [-(-len(t) // per_row) for t in towers]
    width = per_row * (kw + gap) + gap
    height = sum(r * (kh + gap) + gap for r in rows_per) + tower_gap * (len(towers) - 1)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    y0 = 0
    for tower, rows in zip(towers, rows_per):
        for i, kernel in enumerate(tower):
            r, c = divmod(i, per_row)
            canvas.paste(kernel_image(kernel, scale).convert("RGB"), (gap + c * (kw + gap), y0 + gap + r * (kh + gap)))
        y0 += rows * (kh + gap) + gap + tower_gap
    return canvas


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    """A uint8 ``C x H x W`` tensor (1 or 3 channels) as an RGB Pillow image."""
    a = torch.as_tensor(image)
    if a.ndim == 3:
        a = a.permute(1, 2, 0)
    arr = a.contiguous().numpy()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr).convert("RGB")


def image_rows(rows: Sequence[Sequence[torch.Tensor]], captions: Sequence[Sequence[str]] | None = None,
               frames: Sequence[Sequence[tuple[int, int, int] | None]] | None = None, tile: int = 96,
               gap: int = 6, caption_height: int = 14, first_gap: int = 16) -> Image.Image:  # fmt: skip
    """Rows of images (uint8 ``C x H x W``), each scaled to ``tile`` pixels, with an optional
    caption under each and an optional coloured frame; the first column (the query of a
    retrieval row) stands apart by ``first_gap``."""
    columns = max(len(r) for r in rows)
    cell_h = tile + (caption_height if captions else 0)
    width = gap + columns * (tile + gap) + first_gap
    height = gap + len(rows) * (cell_h + gap)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = gap + r * (cell_h + gap)
        for c, image in enumerate(row):
            x = gap + c * (tile + gap) + (first_gap if c else 0)
            pil = to_pil(image)
            resample = Image.NEAREST if pil.width * 2 <= tile else Image.BICUBIC
            canvas.paste(pil.resize((tile, tile), resample), (x, y))
            frame = frames[r][c] if frames else None
            if frame is not None:
                draw.rectangle((x - 2, y - 2, x + tile + 1, y + tile + 1), outline=frame, width=2)
            if captions:
                draw.text((x, y + tile + 2), captions[r][c][: tile // 6], fill=(30, 30, 30))
    return canvas
