"""What a layout scanner produces: labelled input items, files it had to skip, and classes.

An :class:`Item` names one input image (a file, a member of an uncompressed tar, or an array
already in memory), its sample key and its label. Scanners never read image data; they only
list it, so a 150 GB tar is listed by reading its headers.

Keys are the source file name without its extension (``n01440764_10026``,
``ILSVRC2012_val_00000001``); for a class-folder tree, the path below the split folder
(``cat/001``) so that equal file names in two classes stay distinct. :func:`check_key` refuses
keys that could escape a folder when a shard is unpacked (``..``, absolute paths, control
characters); :func:`member_name` turns a key into the WebDataset member name used inside shards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import NamedTuple

import numpy as np

from alexnet.data.dataset import SPLITS


class FileRef(NamedTuple):
    """An image stored as a file on disk."""

    path: str


class TarRef(NamedTuple):
    """An image stored in an uncompressed tar: ``size`` bytes at byte ``offset`` of ``path``."""

    path: str
    offset: int
    size: int


class ArrayRef(NamedTuple):
    """An image already decoded (IDX, CIFAR): ``H,W`` or ``H,W,3`` uint8 pixels."""

    pixels: np.ndarray


Ref = FileRef | TarRef | ArrayRef


class Item(NamedTuple):
    """One input image: its sample key, label, where its bytes are, and a name for reports."""

    key: str
    label: int
    ref: Ref
    origin: str


class Skip(NamedTuple):
    """An input file that was not used, and why."""

    key: str
    origin: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "file": self.origin, "reason": self.reason}


@dataclass
class SplitPlan:
    """The usable items and the skipped files of one split."""

    items: list[Item] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        return len(self.items) + len(self.skipped)


@dataclass
class SourcePlan:
    """Everything a scanner found: classes in label order, both splits, notes for the user."""

    layout: str
    name: str
    classes: list[tuple[str, str]]  # (id, human-readable name), index = label
    splits: dict[str, SplitPlan]
    notes: list[str] = field(default_factory=list)
    hierarchy: dict[str, object] | None = None  # class tree (ILSVRC devkit), stored in the manifest

    def __post_init__(self) -> None:
        for split in SPLITS:
            self.splits.setdefault(split, SplitPlan())


_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def check_key(key: str) -> str | None:
    """Why ``key`` cannot be used as a sample key, or None if it is safe."""
    if not key:
        return "empty file name"
    if _BAD_CHARS.search(key):
        return "file name has control characters or backslashes"
    path = PurePosixPath(key)
    if path.is_absolute() or any(part in ("", ".", "..") for part in key.split("/")):
        return "file name is an absolute path or contains '..'"
    return None


def stem(name: str) -> str:
    """File name without folder and without its last extension (``a/b/x.JPEG`` -> ``x``)."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base[1:] else base


_SAFE = re.compile(r"[^A-Za-z0-9_\-/]")


def member_name(key: str) -> str:
    """The WebDataset key of a sample in a shard: ``key`` with every character other than
    letters, digits, ``_``, ``-`` and ``/`` written as ``%XX`` (so no dots: WebDataset splits a
    member name at its first dot)."""
    return _SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), key)


def finish_split(items: list[Item], skipped: list[Skip]) -> SplitPlan:
    """Sort by key, move unsafe and duplicate keys to ``skipped``; the result is deterministic."""
    items = sorted(items, key=lambda it: (it.key, it.origin))
    kept: list[Item] = []
    skipped = list(skipped)
    for it in items:
        why = check_key(it.key)
        if why is None and kept and kept[-1].key == it.key:
            why = f"duplicate key (same name as {kept[-1].origin})"
        if why:
            skipped.append(Skip(it.key, it.origin, why))
        else:
            kept.append(it)
    skipped.sort(key=lambda s: (s.key, s.origin))
    return SplitPlan(kept, skipped)
