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
import stat
from pathlib import Path

from alexnet.data.prepare.items import FileRef, Item, Skip, SourcePlan, SplitPlan, finish_split
from alexnet.errors import UserError

VAL_NAMES = ("val", "validation", "valid")
DEFAULT_VAL_FRACTION = 0.1


def list_files(folder: Path, skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """Paths (POSIX, relative to ``folder``) of every non-hidden regular file below it, sorted.

    Symlinked folders are followed (a class folder may live on another disk), but a folder
    already listed is not listed again: a symlink loop (``ln -s .. cat/loop``) or a second link
    to a folder would otherwise store the same images many times, under wrong labels too.
    What is not a regular file (a FIFO, a device, a socket, a broken link) is never opened:
    opening a FIFO waits forever for a writer. Both go to ``skipped`` as (path, reason).
    """
    found: list[str] = []
    note = skipped.append if skipped is not None else (lambda _: None)
    seen = {_identity(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        rel = Path(dirpath).relative_to(folder)
        # Real folders claim their identity before links to them, so a link is the one skipped.
        visible = [d for d in dirnames if not d.startswith(".")]
        dirnames[:] = []
        for d in sorted(visible, key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d)):
            ident = _identity(Path(dirpath) / d)
            if ident is None:
                note(((rel / d).as_posix(), "unreadable folder"))
            elif ident in seen:
                note(((rel / d).as_posix(), "symlink loop or second link to a folder already listed; not followed"))
            else:
                seen.add(ident)
                dirnames.append(d)
        dirnames.sort()
        for name in filenames:
            if name.startswith("."):
                continue
            why = _not_regular(Path(dirpath) / name)
            if why:
                note(((rel / name).as_posix(), why))
            else:
                found.append((rel / name).as_posix())
    return sorted(found)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read, or None."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return "broken symlink" if path.is_symlink() else f"unreadable: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
    kind = next((name for test, name in kinds.items() if test(mode)), "not a file")
    return f"not a regular file ({kind}); not read"


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
    items, skipped, odd = [], [], []
    for rel in list_files(folder, odd):
        path, key = folder / rel, rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1][1:] else rel
        if "/" not in rel:
            skipped.append(Skip(key, _rel(root, path), "not inside a class folder"))
        elif rel.split("/", 1)[0] not in label:
            skipped.append(Skip(key, _rel(root, path), f"class folder {rel.split('/', 1)[0]!r} is not in train"))
        else:
            items.append(Item(key, label[rel.split("/", 1)[0]], FileRef(str(path)), _rel(root, path)))
    skipped += [Skip(rel, _rel(root, folder / rel), why) for rel, why in odd]
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
