"""Image files a user names: files, folders of them, or ``-`` for bytes on standard input.

:func:`expand_images` turns the names into files, :func:`read_image_bytes` reads one (bounded),
:func:`load_image` decodes it with a model's :func:`~alexnet.data.convention.eval_transform`.
URLs are refused, never fetched: this package makes no network requests.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import torch

from alexnet.data.convention import InputConvention, eval_transform
from alexnet.errors import UserError
from alexnet.io import MAX_IMAGE_BYTES, read_capped, read_regular_file

STDIN = "-"
STDIN_NAME = "<stdin>"  # how results name the image read from standard input
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


def load_image(path: str | Path, convention: InputConvention, data: bytes | None = None) -> torch.Tensor:
    """An image file as the uint8 ``C x crop x crop`` tensor ``convention`` feeds its network
    (before normalisation): decoded like the training data, then the centre crop. ``data``: the
    encoded bytes, when they are at hand (standard input, an upload). A :class:`UserError` names
    the file when it cannot be read or decoded."""
    from alexnet.data.prepare.convert import ConversionError

    data = read_image_bytes(str(path)) if data is None else data
    try:
        return eval_transform(convention).decode(data)
    except ConversionError as e:
        raise UserError(f"cannot read image {'standard input' if str(path) == STDIN else path}: {e}") from None
