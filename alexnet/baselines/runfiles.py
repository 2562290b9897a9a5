"""The files of a baseline run folder, read and written safely: ``.npz`` arrays and small JSON
files (bounded before they are read; a damaged one is one line naming it) and the features of a
split, streamed to disk through a memory map and renamed into place when complete."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from alexnet.baselines.features import Extractor
from alexnet.data import BatchPlan
from alexnet.data.dataset import Dataset
from alexnet.data.presets import centre_crop
from alexnet.errors import UserError
from alexnet.io import atomic_write, read_regular_file


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


# The largest array a baseline file may hold (sift-fv's SVM on ImageNet: 1000 x 10,240 floats,
# 41 MB): an .npz member's header is checked against it before numpy allocates what it claims.
MAX_ARRAY_BYTES = 1 << 30
# A run folder's small files (config, stages, extractor settings) are a few KB.
MAX_JSON_BYTES = 16 << 20
REDO = "delete it to recompute that stage, or the folder to start over"
RESTART = "fit the baseline again into a new --out (or delete the folder)"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.zip.namelist():
                with z.zip.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                if math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
                    raise ValueError(f"{name} claims a {'x'.join(map(str, shape))} array, more than {MAX_ARRAY_BYTES >> 20} MB")
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        raise UserError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}); {REDO}") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from one of the run folder's small files, or a one-line :class:`UserError`."""
    try:
        value = json.loads(read_regular_file(path, MAX_JSON_BYTES))
    except ValueError as e:  # UserError (too big, not a file) included
        raise UserError(f"{path} is damaged ({e}); {RESTART}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is damaged (not a JSON object); {RESTART}")
    return value


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Whatever a damaged (truncated, hand-edited, hostile) stored file makes the code that reads it
    raise becomes one line naming the file."""
    try:
        yield
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, ZeroDivisionError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); {REDO}") from None


def write_features(path: Path, ds: Dataset, split: str, extractor: Extractor, batch: int, crop: int,
                   progress: bool) -> float:  # fmt: skip
    """Stream ``split``'s features into ``path`` (.npy via a memory map, then renamed); returns
    seconds spent. Memory: one batch of images and features."""
    n = ds.num_samples(split)
    tmp = path.with_name(f".{path.name}.partial")
    labels = np.empty(n, dtype=np.int64)
    start = time.perf_counter()
    out = None
    done = 0
    with tqdm(total=n, desc=f"features {split}", unit="img", disable=not progress, leave=False) as bar:
        for images, y in image_batches(ds, split, batch, crop):
            f = extractor.transform(images).numpy()
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, f.shape[1]))
            out[done : done + len(f)] = f
            labels[done : done + len(f)] = y.numpy()
            done += len(f)
            bar.update(len(f))
    assert out is not None and done == n, (done, n)
    out.flush()
    del out
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    buf = io.BytesIO()
    np.save(buf, labels)
    atomic_write(path.with_name(path.stem + "-labels.npy"), lambda fh: fh.write(buf.getbuffer()))
    os.replace(tmp, path)  # the labels first: a features file present means both are complete
    return time.perf_counter() - start


def image_batches(ds: Dataset, split: str, batch: int, crop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Centre-cropped uint8 batches of ``split`` in dataset order (the network's eval view)."""
    for images, labels in ds.batches(split, BatchPlan(batch)):
        yield centre_crop(images.contiguous(), crop), labels


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with reading(path):  # a truncated features file: one line, not numpy's traceback
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        y = np.load(path.with_name(path.stem + "-labels.npy"), allow_pickle=False)
    return x, y
