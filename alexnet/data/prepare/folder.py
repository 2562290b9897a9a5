"""A tree with one sub-folder per class: ``SOURCE/train/<class>/*`` and ``SOURCE/val/<class>/*``,
or a single ``SOURCE/<class>/*`` split into train and val by ``--val-fraction``.

Labels are the indices of the sorted class-folder names of the training split. Every file
below a class folder (at any depth) is an input file, except hidden ones (``.DS_Store``); one
that is no image is skipped and reported. Keys are paths below the split folder without the
extension (``cat/001``), so that equal file names in two classes stay distinct.

The single-tree split is deterministic and does not depend on the machine or on file order:
in each class, files are ordered by a hash of their key and the first ``round(n * F)`` go to
``val``; adding files to a class moves few others between splits.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from alexnet.data.prepare.items import FileRef, Item, Skip, SourcePlan, SplitPlan, finish_split
from alexnet.errors import UserError

VAL_NAMES = ("val", "validation", "valid")
DEFAULT_VAL_FRACTION = 0.1


def list_files(folder: Path) -> list[str]:
    """Paths (POSIX, relative to ``folder``) of every non-hidden file below it, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(folder)
        for name in filenames:
            if not name.startswith("."):
                found.append((rel / name).as_posix())
    return sorted(found)


def _class_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def split_folder(root: Path) -> Path | None:
    """``root/val`` (or ``validation``, ``valid``) when it exists."""
    return next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)


def detect(root: Path) -> bool:
    """Whether ``root`` has class sub-folders (directly, or under ``train/``)."""
    if not root.is_dir():
        return False
    base = root / "train" if (root / "train").is_dir() else root
    return bool(_class_dirs(base))


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _scan_split(root: Path, folder: Path, label: dict[str, int]) -> SplitPlan:
    items, skipped = [], []
    for rel in list_files(folder):
        path, key = folder / rel, rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1][1:] else rel
        if "/" not in rel:
            skipped.append(Skip(key, _rel(root, path), "not inside a class folder"))
        elif rel.split("/", 1)[0] not in label:
            skipped.append(Skip(key, _rel(root, path), f"class folder {rel.split('/', 1)[0]!r} is not in train"))
        else:
            items.append(Item(key, label[rel.split("/", 1)[0]], FileRef(str(path)), _rel(root, path)))
    return finish_split(items, skipped)


def _hash_fraction(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def scan(root: Path, val_fraction: float | None = None) -> SourcePlan:
    """List a class-folder tree; see the module docstring."""
    train_dir, val_dir = root / "train", split_folder(root)
    name = root.resolve().name or "folder"
    if train_dir.is_dir():
        if val_fraction is not None:
            raise UserError(
                f"{root} already has train/ and val/ folders; --val-fraction only applies to a single class tree"
            )
        class_names = _class_dirs(train_dir)
        if not class_names:
            raise UserError(f"{train_dir} has no class sub-folders; expected {train_dir}/<class>/<image files>")
        label = {c: i for i, c in enumerate(class_names)}
        train = _scan_split(root, train_dir, label)
        val = _scan_split(root, val_dir, label) if val_dir else SplitPlan()
        notes = [
            f"train: {train_dir}",
            f"val: {val_dir}" if val_dir else "val: none (no val/ folder, the split is empty)",
        ]
        plan = SourcePlan("folder", name, [(c, c) for c in class_names], {"train": train, "val": val}, notes)
        return plan
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    if not 0 <= fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {fraction}")
    class_names = _class_dirs(root)
    if not class_names:
        raise UserError(f"{root} has no class sub-folders; expected {root}/<class>/<image files>")
    label = {c: i for i, c in enumerate(class_names)}
    everything = _scan_split(root, root, label)
    by_class: dict[int, list[Item]] = {}
    for it in everything.items:
        by_class.setdefault(it.label, []).append(it)
    train_items, val_items = [], []
    for members in by_class.values():
        ranked = sorted(members, key=lambda it: (_hash_fraction(it.key), it.key))
        k = round(len(ranked) * fraction)
        val_items += ranked[:k]
        train_items += ranked[k:]
    # Files skipped while listing (not in a class folder, bad names) belong to no split; report them under train.
    train = finish_split(train_items, everything.skipped)
    val = finish_split(val_items, [])
    notes = [f"single class tree {root}: {fraction:g} of each class to val (hash of the file name)"]
    return SourcePlan("folder", name, [(c, c) for c in class_names], {"train": train, "val": val}, notes)
