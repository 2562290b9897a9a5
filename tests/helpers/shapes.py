"""A small real image set for the baseline tests: drawn shapes with noise, written as IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST-format (IDX) files, so the set is read through the ordinary ``mnist:DIR`` source."""
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in zip(stems[split], (images, labels)):
        header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def draw_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small real image set: outlined boxes, filled discs, crosses, stripes at random places
    and sizes, with noise; 28x28 grey, four classes."""
    rng = np.random.default_rng(seed)
    images, labels = np.zeros((n, 28, 28), np.uint8), np.arange(n) % 4
    for i, label in enumerate(labels):
        im = Image.new("L", (28, 28), 0)
        d = ImageDraw.Draw(im)
        s = int(rng.integers(8, 16))
        x, y = (int(v) for v in rng.integers(1, 27 - s, 2))
        shade = int(rng.integers(120, 256))
        if label == 0:
            d.rectangle((x, y, x + s, y + s), outline=shade, width=2)
        elif label == 1:
            d.ellipse((x, y, x + s, y + s), fill=shade)
        elif label == 2:
            d.line((x, y, x + s, y + s), fill=shade, width=2)
            d.line((x, y + s, x + s, y), fill=shade, width=2)
        else:
            for k in range(0, s, 4):
                d.line((x, y + k, x + s, y + k), fill=shade, width=2)
        noisy = np.asarray(im, np.float64) + rng.normal(0, 15, (28, 28))
        images[i] = noisy.clip(0, 255).astype(np.uint8)
    return images, labels
