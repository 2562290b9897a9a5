"""Predictions for image files, a folder of them, or image bytes on standard input.

Images are decoded and converted by :func:`alexnet.data.prepare.convert.model_pixels`, the
function ``alexnet prepare`` stores training images with (an RGBA image is composited on white
in both), then centre-cropped and normalised like evaluation does. URLs are refused, never
fetched: this package makes no network requests.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch

from alexnet.data.prepare.convert import ConversionError, model_pixels
from alexnet.data.presets import Normalizer, centre_crop
from alexnet.errors import UserError
from alexnet.io import MAX_IMAGE_BYTES, read_capped, read_regular_file
from alexnet.precision import resolve_precision
from alexnet.runtime import autocast, resolve_device

STDIN = "-"
BATCH = 64  # images per forward pass: a folder of thousands of images stays in bounded memory
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def image_extensions() -> frozenset[str]:
    """File name endings (``.jpg``, ``.png``, ...) of the formats Pillow reads."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def expand_images(args: Sequence[str]) -> list[str]:
    """The images named by ``args``: files as given, folders as their image files (recursively,
    in sorted order), ``-`` for standard input. URLs are a :class:`UserError`."""
    images: list[str] = []
    for arg in args:
        if _URL.match(arg):
            raise UserError(f"{arg} is a URL; URLs are not fetched: download the image and pass the file")
        path = Path(arg)
        if arg != STDIN and path.is_dir():
            extensions = image_extensions()
            found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in extensions and p.is_file())
            if not found:
                raise UserError(f"{arg} is a folder without image files ({', '.join(sorted(extensions)[:6])}, ...)")
            images += found
        else:
            images.append(arg)
    if images.count(STDIN) > 1:
        raise UserError("standard input (-) can be given only once")
    return images


def read_image_bytes(name: str, stdin: IO[bytes] | None = None) -> bytes:
    """The bytes of the image file ``name`` (``-``: all of ``stdin``, default standard input)."""
    if name == STDIN:
        return read_capped(stdin or sys.stdin.buffer, MAX_IMAGE_BYTES, "standard input")
    try:
        return read_regular_file(name, MAX_IMAGE_BYTES)
    except FileNotFoundError:
        raise UserError(f"image not found: {name}") from None
    except IsADirectoryError:
        raise UserError(f"cannot read image {name}: it is a folder") from None
    except OSError as e:
        raise UserError(f"cannot read image {name}: {e.strerror or e}") from None


def load_image(
    path: str | Path, channels: int, image_size: int, crop: int, data: bytes | None = None
) -> torch.Tensor:
    """An image as a uint8 ``C x crop x crop`` tensor, preprocessed like the training data:
    :func:`~alexnet.data.prepare.convert.model_pixels` at ``image_size``, then the centre
    ``crop``. ``data``: the encoded bytes, when they are at hand (standard input)."""
    data = read_image_bytes(str(path)) if data is None else data
    try:
        pixels = model_pixels(data, channels, image_size)
    except ConversionError as e:
        raise UserError(f"cannot read image {'standard input' if str(path) == STDIN else path}: {e}") from None
    return centre_crop(torch.from_numpy(pixels.copy()).permute(2, 0, 1), crop).contiguous()  # PIL arrays are read-only


@torch.inference_mode()
def predict(
    checkpoint: str,
    images: Sequence[str],
    topk: int = 5,
    device_name: str = "auto",
    precision_name: str = "auto",
    stdin: IO[bytes] | None = None,
) -> list[dict[str, Any]]:
    """Top-``topk`` classes and probabilities for each image (files, folders, ``-``; see
    :func:`expand_images`), in the order given; an image that cannot be read gets ``error`` (its
    one-line message) instead of ``predictions``."""
    from alexnet.evaluation import load_model

    names = expand_images(images)
    device = resolve_device(device_name)
    m = load_model(checkpoint, device)
    precision = resolve_precision(precision_name, device, m.name)
    norm = None if m.norm.mean_image is not None else Normalizer(m.norm.mean, m.norm.std)
    results: list[dict[str, Any]] = []
    for start in range(0, len(names), BATCH):
        chunk, loaded = [], []
        for name in names[start : start + BATCH]:
            try:  # one unreadable file in a folder of thousands: say so and go on with the others
                loaded.append(load_image(name, m.channels, m.image_size, m.crop, read_image_bytes(name, stdin)))
                chunk.append(name)
            except UserError as e:
                results.append({"image": "<stdin>" if name == STDIN else name, "error": str(e)})
        if not chunk:
            continue
        batch = torch.stack(loaded).to(device)
        if norm is None:
            x = batch.float() - centre_crop(m.norm.mean_image.to(device), m.crop)
        else:
            x = norm(batch)
        with autocast(device, precision):
            probs = m.model(x).float().softmax(dim=1)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for n, name in enumerate(chunk):
            predictions = [{"class": m.classes[i], "index": int(i), "prob": float(p)}
                           for p, i in zip(top.values[n], top.indices[n])]  # fmt: skip
            results.append({"image": "<stdin>" if name == STDIN else name, "predictions": predictions})
    return results
