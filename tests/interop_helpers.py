"""Shared by the interop and serving tests: small run folders and real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet import models
from alexnet.interop.runs import write_run
from alexnet.training.loop import InputNorm
from tests.conftest import FASHION_DIR, HAS_FASHION

CLASSES = ("cat", "dog", "ship", "tree")


def make_run(out: Path, name: str = "alexnet-small", num_classes: int = 4, mean_image: bool = False, seed: int = 0) -> Path:
    """A run folder holding a freshly initialised ``name`` (RGB), as `alexnet import` writes one."""
    torch.manual_seed(seed)
    model = models.create(name, num_classes)
    image_size, crop = {"alexnet-small": (32, 28), "alexnet": (256, 227), "alexnet-owt": (256, 224)}[name]
    gen = torch.Generator().manual_seed(seed)
    norm = InputNorm((120.0, 115.0, 100.0), (60.0, 58.0, 62.0),
                     torch.rand(3, image_size, image_size, generator=gen) * 255 if mean_image else None)  # fmt: skip
    classes = list(CLASSES) if num_classes == len(CLASSES) else [f"class{i}" for i in range(num_classes)]
    write_run(out, model, name, {}, classes, 3, image_size, crop, norm, "test", {"from": "tests"})
    return out


def real_images(folder: Path, count: int = 8) -> list[str]:
    """``count`` real pictures as files: Fashion-MNIST test images (PNG) when installed, else
    photo-like JPEGs from ``alexnet bench prepare``'s generator."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    if HAS_FASHION:
        from alexnet.data.idx import find_idx_file, read_idx

        pixels = read_idx(find_idx_file(FASHION_DIR, "t10k-images-idx3-ubyte"))
        for i in range(count):
            path = folder / f"fashion_{i}.png"
            Image.fromarray(np.asarray(pixels[i]).reshape(28, 28)).save(path)
            files.append(str(path))
        return files
    from alexnet.bench.prepare import photo_like

    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"photo_{i}.jpg"
        photo_like(rng, 160, 120).save(path, "JPEG", quality=90)
        files.append(str(path))
    return files
