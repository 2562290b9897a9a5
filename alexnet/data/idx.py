"""The IDX format of MNIST and Fashion-MNIST (gzip-compressed or not): reader and writer."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from alexnet.errors import UserError
from alexnet.io import atomic_write

# The file names of an MNIST-format folder per split (each gzipped or not): images, labels.
# The 10,000-image "t10k" test set is the val split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type byte -> numpy dtype (big-endian), from the format's description on the MNIST page.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into an array of its declared shape and type.

    Raises :class:`UserError` for a missing file, a bad magic number, an unknown type code or
    a length that does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"{path} is a damaged gzip file ({e}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number); expected MNIST-format data")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES or ndim == 0:
        raise UserError(f"{path} is not an IDX file (type 0x{type_code:02x}, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is truncated (header needs {header} bytes, file has {len(raw)})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap at 2**63
    if len(raw) != expected:
        raise UserError(
            f"{path} is truncated or damaged: header says {shape} ({expected} bytes), file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder} has no {stem}[.gz]; is this an MNIST-format folder?")


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8, any shape) as an uncompressed IDX file, atomically."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape)
    atomic_write(path, lambda f: f.write(header + data.tobytes()))
