"""CIFAR-10 and CIFAR-100, python version: the tarball (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``) or its extracted folder (``cifar-10-batches-py/``,
``cifar-100-python/``).

The batches are Python pickles. They are read with an unpickler that only builds dicts,
lists, strings and numpy arrays, so a doctored file cannot run code. Labels and class names are
the dataset's own (CIFAR-100: the 100 fine labels); they are already alphabetical. Keys are
``<batch>_<n>``: ``data_batch_1_00042``, ``test_batch_00042``, ``train_00042``.
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.prepare.items import ArrayRef, Item, SourcePlan, SplitPlan, finish_split
from alexnet.errors import UserError
from alexnet.io import read_regular_file

TARBALLS = ("cifar-10-python.tar.gz", "cifar-100-python.tar.gz")
FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"), ("builtins", "bytearray"), ("_codecs", "encode"),
}  # fmt: skip


# The largest batch file read (CIFAR-100's train is 158 MB): every other member of the tarball
# is skipped unread, and a bigger batch is refused before a byte of it is read.
MAX_BATCH_BYTES = 256 << 20
_BATCH_NAME = re.compile(r"^(batches\.meta|meta|data_batch_\d+|test_batch|train|test)$")


def _bytes_only_bytearray(real: Callable[..., Any]) -> Callable[..., Any]:
    """``bytearray`` as a numpy pickle calls it (a copy of bytes), never ``bytearray(10**9)``:
    a 32-byte pickle must not allocate gigabytes."""

    def call(data: object = b"") -> Any:
        if not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"refusing bytearray({type(data).__name__}) in a CIFAR batch")
        return real(data)

    return call


def _empty_reconstruct(real: Callable[..., Any]) -> Callable[..., Any]:
    """numpy's ``_reconstruct`` as pickles call it: an empty array that ``__setstate__`` then fills
    from the pickle's own bytes (whose length numpy checks); never an allocation by shape alone."""

    def call(subtype: object, shape: object, dtype: object) -> Any:
        if not isinstance(shape, tuple) or any(not isinstance(n, int) or n != 0 for n in shape):
            raise pickle.UnpicklingError(f"refusing an array of shape {shape!r} made without data in a CIFAR batch")
        return real(subtype, shape, dtype)

    return call


_GUARDED = {"bytearray": _bytes_only_bytearray, "_reconstruct": _empty_reconstruct}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in _ALLOWED:
            found = super().find_class(module, name)
            return _GUARDED[name](found) if name in _GUARDED else found
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def load_batch(data: bytes, origin: str) -> dict[str, object]:
    """One CIFAR pickle as a dict with str keys."""
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - pickle raises many types for a damaged file
        raise UserError(f"{origin}: not a CIFAR python batch ({type(e).__name__}: {e}); download it again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{origin}: not a CIFAR python batch (a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _find(root: Path) -> Path | None:
    """The tarball or the batches folder named by ``root``."""
    if root.is_file():
        return root
    for name in FOLDERS + TARBALLS:
        if (root / name).exists():
            return root / name
    if (root / "batches.meta").is_file() or ((root / "meta").is_file() and (root / "train").is_file()):
        return root
    return None


def detect(root: Path) -> bool:
    found = _find(root)
    if found is None:
        return False
    if found.is_file():
        try:
            with tarfile.open(found, mode="r:*") as tar:
                return any(n.split("/", 1)[0] in FOLDERS for n in tar.getnames()[:20])
        except (tarfile.TarError, OSError, EOFError):
            return False
    return True


def _read_files(found: Path) -> dict[str, bytes]:
    """Base name -> bytes of the batch files."""
    files: dict[str, bytes] = {}
    if found.is_file():
        try:
            with tarfile.open(found, mode="r:*") as tar:
                for info in tar:
                    base = info.name.rsplit("/", 1)[-1]
                    if info.isreg() and _BATCH_NAME.match(base):
                        _check_size(found, info.name, info.size)
                        f = tar.extractfile(info)
                        files[base] = f.read(MAX_BATCH_BYTES) if f else b""
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"{found}: cannot read the CIFAR tarball ({e}); download it again") from None
    else:
        for p in sorted(found.iterdir()):
            if _BATCH_NAME.match(p.name) and p.is_file():
                _check_size(found, p.name, p.stat().st_size)
                files[p.name] = read_regular_file(p, MAX_BATCH_BYTES)
    return files


def _check_size(found: Path, name: str, size: int) -> None:
    if size > MAX_BATCH_BYTES:
        raise UserError(f"{found}: {name} is {size >> 20} MB, more than any CIFAR batch ({MAX_BATCH_BYTES >> 20} MB); "
                        "not read: download the dataset again")  # fmt: skip


def _strings(values: object) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CifarBatches:
    """The batches of one CIFAR download, checked: per split, (batch name, ``N x 3 x 32 x 32``
    uint8 pixels, N labels)."""

    name: str  # cifar-10 or cifar-100
    classes: list[str]
    found: Path
    splits: dict[str, list[tuple[str, np.ndarray, list[int]]]]


def read_batches(root: Path) -> CifarBatches:
    """Read and check the batches of the CIFAR tarball or folder at (or in) ``root``."""
    found = _find(root)
    if found is None:
        raise UserError(f"{root}: no CIFAR tarball or batches folder ({', '.join(TARBALLS + FOLDERS)})")
    files = _read_files(found)
    if "batches.meta" in files:  # CIFAR-10
        name, label_key = "cifar-10", "labels"
        names = _strings(load_batch(files["batches.meta"], "batches.meta")["label_names"])
        batches = {"train": sorted(n for n in files if n.startswith("data_batch_")), "val": ["test_batch"]}
    elif "meta" in files:  # CIFAR-100
        name, label_key = "cifar-100", "fine_labels"
        names = _strings(load_batch(files["meta"], "meta")["fine_label_names"])
        batches = {"train": ["train"], "val": ["test"]}
    else:
        raise UserError(f"{found}: no batches.meta (CIFAR-10) or meta (CIFAR-100); is it the python version?")
    splits: dict[str, list[tuple[str, np.ndarray, list[int]]]] = {}
    for split, batch_names in batches.items():
        splits[split] = []
        for batch in batch_names:
            if batch not in files:
                continue
            d = load_batch(files[batch], batch)
            data, labels = np.asarray(d.get("data")), d.get(label_key)
            if (
                data.dtype != np.uint8
                or data.ndim != 2
                or data.shape[1] != 3072
                or labels is None
                or len(labels) != len(data)
            ):  # type: ignore[arg-type]
                raise UserError(f"{found}: batch {batch} is not CIFAR data (3072 uint8 values and a label per image)")
            ys = [int(y) for y in labels]  # type: ignore[union-attr]
            bad = next((y for y in ys if not 0 <= y < len(names)), None)
            if bad is not None:
                raise UserError(f"{found}: batch {batch} has label {bad} for {len(names)} classes")
            splits[split].append((batch, data.reshape(-1, 3, 32, 32), ys))
    if not any(splits.values()):
        raise UserError(f"{found}: no CIFAR batches found (data_batch_N/test_batch or train/test)")
    return CifarBatches(name, names, found, splits)


def scan(root: Path) -> SourcePlan:
    b = read_batches(root)
    splits: dict[str, SplitPlan] = {}
    for split, batches in b.splits.items():
        items = []
        for batch, data, labels in batches:
            pixels = data.transpose(0, 2, 3, 1)
            for i, y in enumerate(labels):
                items.append(Item(f"{batch}_{i:05d}", y, ArrayRef(np.ascontiguousarray(pixels[i])), f"{batch}[{i}]"))
        splits[split] = finish_split(items, [])
    return SourcePlan("cifar", b.name, [(n, n) for n in b.classes], splits, [f"CIFAR python batches from {b.found}"])
