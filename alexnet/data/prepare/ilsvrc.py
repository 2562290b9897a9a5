"""The official ILSVRC-2012 release, as tars or already extracted.

SOURCE holds any of

* ``ILSVRC2012_img_train.tar`` (1000 per-class tars ``<wnid>.tar`` of ``<wnid>_<n>.JPEG``), or a
  folder ``ILSVRC2012_img_train/`` or ``train/`` with those per-class tars or ``<wnid>/`` folders;
* ``ILSVRC2012_img_val.tar`` (50,000 flat ``ILSVRC2012_val_<8 digits>.JPEG``), or a folder
  ``ILSVRC2012_img_val/`` or ``val/`` holding them flat (or already sorted into ``<wnid>/``);
* ``ILSVRC2012_devkit_t12.tar.gz`` or its folder ``ILSVRC2012_devkit_t12/``.

Labels: index of the WNID in the sorted list of the devkit's leaf classes; validation image *n*
gets the class of line *n* of the ground truth, mapped ILSVRC2012_ID -> WNID through meta.mat.
Without a devkit, the classes are the sorted per-class tar/folder names and a flat validation
set cannot be labelled (an error says to add the devkit).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alexnet.data.prepare import tars
from alexnet.data.prepare.devkit import Devkit, find_devkit, load_devkit
from alexnet.data.prepare.folder import list_files
from alexnet.data.prepare.items import FileRef, Item, Skip, SourcePlan, SplitPlan, TarRef, finish_split, stem
from alexnet.errors import UserError

TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
TRAIN_DIRS, VAL_DIRS = ("ILSVRC2012_img_train", "train"), ("ILSVRC2012_img_val", "val")
VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})$")
WNID = re.compile(r"^n\d{8}$")
_NAMES_FILE = Path(__file__).resolve().parent.parent.parent / "resources" / "imagenet_classes.txt"


def detect(root: Path) -> bool:
    """Whether ``root`` looks like the official release (tars, devkit or their folders)."""
    if not root.is_dir():
        return False
    if any((root / n).is_file() for n in (TRAIN_TAR, VAL_TAR)) or find_devkit(root) is not None:
        return True
    if (root / "ILSVRC2012_img_train").is_dir() or (root / "ILSVRC2012_img_val").is_dir():
        return True
    val = root / "val"
    if val.is_dir():
        with os.scandir(val) as it:
            if any(e.is_file() and VAL_NAME.match(stem(e.name)) for e in it):
                return True
    train = root / "train"
    if train.is_dir():
        with os.scandir(train) as it:
            if any(e.is_file() and e.name.endswith(".tar") and WNID.match(e.name[:-4]) for e in it):
                return True
    return False


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def scan(root: Path, progress: bool = False) -> SourcePlan:
    """List both splits of the release in ``root`` (no image is read)."""
    devkit_path = find_devkit(root)
    devkit = load_devkit(devkit_path) if devkit_path else None
    train_tar, val_tar = root / TRAIN_TAR, root / VAL_TAR
    train_dir, val_dir = _first(root, TRAIN_DIRS), _first(root, VAL_DIRS)
    notes = [f"devkit: {devkit.origin}" if devkit else "devkit: none"]

    # Training set: (class id, items of that class) from the tar or the folder.
    train_items: list[tuple[str, Item]] = []
    train_skipped: list[Skip] = []
    if train_tar.is_file():
        notes.append(f"train: {train_tar}")
        _scan_train_tar(root, train_tar, train_items, train_skipped, progress)
    elif train_dir is not None:
        notes.append(f"train: {train_dir}")
        _scan_train_dir(root, train_dir, train_items, train_skipped)

    if devkit is not None:
        wnids = devkit.wnids
        classes = [(w, devkit.words[w]) for w in wnids]
    else:
        wnids = sorted({wnid for wnid, _ in train_items} | _val_class_folders(val_dir))
        classes = [(w, n) for w, n in zip(wnids, _known_names(wnids))]
    label = {w: i for i, w in enumerate(wnids)}

    items, skipped = [], list(train_skipped)
    for wnid, it in train_items:
        if wnid in label:
            items.append(it._replace(label=label[wnid]))
        else:
            skipped.append(Skip(it.key, it.origin, f"class {wnid} is not one of the classes in meta.mat"))
    train = finish_split(items, skipped)

    val = SplitPlan()
    if val_tar.is_file():
        notes.append(f"val: {val_tar}")
        val = _scan_val_tar(root, val_tar, devkit, label)
    elif val_dir is not None:
        notes.append(f"val: {val_dir}")
        val = _scan_val_dir(root, val_dir, devkit, label)
    if not train.inputs and not val.inputs:
        raise UserError(
            f"{root}: found the ILSVRC-2012 devkit but no images; put {TRAIN_TAR} and/or {VAL_TAR} "
            "(or their extracted folders) beside it"
        )
    hierarchy = devkit.hierarchy() if devkit is not None else None
    return SourcePlan("ilsvrc", "imagenet", classes, {"train": train, "val": val}, notes, hierarchy)


def _known_names(wnids: list[str]) -> list[str]:
    """Human-readable names when the WNIDs are the 1000 ILSVRC classes (the packaged table is
    in sorted-WNID order); otherwise the WNIDs themselves."""
    if len(wnids) == 1000 and all(WNID.match(w) for w in wnids) and _NAMES_FILE.is_file():
        names = _NAMES_FILE.read_text(encoding="utf-8").splitlines()
        if len(names) == 1000:
            return names
    return list(wnids)


def _rel(root: Path, path: Path | str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _scan_train_tar(root: Path, path: Path, out: list, skipped: list[Skip], progress: bool) -> None:
    from tqdm import tqdm

    base = _rel(root, path)
    damage: list[str] = []
    with tars.open_plain_tar(path) as outer, open(path, "rb") as f:
        bar = tqdm(desc="listing " + path.name, unit=" classes", disable=not progress, leave=False)
        for m in tars.iter_members(outer, limit=os.path.getsize(path), damage=damage):
            bar.update(1)
            origin = f"{base}/{m.name}"
            if not m.name.endswith(".tar") or not m.regular:
                skipped.append(Skip(stem(m.name), origin, "not a per-class tar (<wnid>.tar)"))
                continue
            _scan_class_tar(str(path), f, m, stem(m.name), origin, out, skipped)
        bar.close()
    skipped += [Skip(stem(path.name), base, f"truncated download: {d}; download it again") for d in damage]


def _scan_class_tar(path: str, f, member: tars.Member, wnid: str, origin: str, out: list, skipped: list) -> None:  # type: ignore[no-untyped-def]
    try:
        inner = tars.open_nested(f, member)
    except Exception as e:  # noqa: BLE001 - tarfile.ReadError and friends: a damaged per-class tar
        skipped.append(Skip(wnid, origin, f"damaged per-class tar, none of its images can be read ({e})"))
        return
    damage: list[str] = []
    with inner:
        for m in tars.iter_members(inner, base=member.offset, limit=member.offset + member.size, damage=damage):
            key, where = stem(m.name), f"{origin}/{m.name}"
            if not m.regular:
                skipped.append(Skip(key, where, "not a regular file"))
            else:
                out.append((wnid, Item(key, -1, TarRef(path, m.offset, m.size), where)))
    skipped += [Skip(wnid, origin, f"damaged per-class tar: {d}") for d in damage]


def _scan_train_dir(root: Path, folder: Path, out: list, skipped: list[Skip]) -> None:
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            odd: list[tuple[str, str]] = []
            for rel in list_files(Path(e.path), odd):
                p = Path(e.path) / rel
                out.append((e.name, Item(stem(rel), -1, FileRef(str(p)), _rel(root, p))))
            skipped += [Skip(stem(rel), _rel(root, Path(e.path) / rel), why) for rel, why in odd]
        elif e.is_file() and e.name.endswith(".tar"):
            wnid, origin = e.name[:-4], _rel(root, e.path)
            if tars.is_compressed(e.path):
                skipped.append(Skip(wnid, origin, "compressed per-class tar; decompress it"))
                continue
            with open(e.path, "rb") as f:
                whole = tars.Member(e.name, 0, os.path.getsize(e.path), True)
                _scan_class_tar(e.path, f, whole, wnid, origin, out, skipped)
        else:
            skipped.append(Skip(stem(e.name), _rel(root, e.path), "not a class folder or per-class tar"))


def _val_class_folders(val_dir: Path | None) -> set[str]:
    if val_dir is None:
        return set()
    with os.scandir(val_dir) as it:
        return {e.name for e in it if e.is_dir() and not e.name.startswith(".")}


def _val_label(key: str, devkit: Devkit | None, label: dict[str, int], where: str) -> tuple[int, str | None]:
    match = VAL_NAME.match(key)
    if not match:
        return -1, "not a validation image name (ILSVRC2012_val_NNNNNNNN.JPEG)"
    if devkit is None or devkit.val_ids is None:
        raise UserError(
            f"{where}: validation labels come from the devkit's ground truth; put ILSVRC2012_devkit_t12.tar.gz "
            "(with data/ILSVRC2012_validation_ground_truth.txt) in SOURCE"
        )
    n = int(match.group(1))
    if not 1 <= n <= len(devkit.val_ids):
        return -1, f"no ground truth for image {n} (the devkit lists {len(devkit.val_ids)})"
    wnid = devkit.wnid_of_id[devkit.val_ids[n - 1]]
    if wnid not in label:
        return -1, f"class {wnid} is not one of the classes"
    return label[wnid], None


def _scan_val_tar(root: Path, path: Path, devkit: Devkit | None, label: dict[str, int]) -> SplitPlan:
    items, skipped = [], []
    base = _rel(root, path)
    damage: list[str] = []
    with tars.open_plain_tar(path) as tar:
        for m in tars.iter_members(tar, limit=os.path.getsize(path), damage=damage):
            key, where = stem(m.name), f"{base}/{m.name}"
            if not m.regular:
                skipped.append(Skip(key, where, "not a regular file"))
                continue
            y, why = _val_label(key, devkit, label, str(path))
            if why:
                skipped.append(Skip(key, where, why))
            else:
                items.append(Item(key, y, TarRef(str(path), m.offset, m.size), where))
    skipped += [Skip(stem(path.name), base, f"truncated download: {d}; download it again") for d in damage]
    return finish_split(items, skipped)


def _scan_val_dir(root: Path, folder: Path, devkit: Devkit | None, label: dict[str, int]) -> SplitPlan:
    items, skipped, odd = [], [], []
    for rel in list_files(folder, odd):
        p = folder / rel
        where, key = _rel(root, p), stem(rel)
        if "/" in rel:  # sorted into class folders (e.g. by valprep.sh): the folder is the class
            wnid = rel.split("/", 1)[0]
            if wnid in label:
                items.append(Item(key, label[wnid], FileRef(str(p)), where))
            else:
                skipped.append(Skip(key, where, f"class folder {wnid} is not one of the classes"))
            continue
        y, why = _val_label(key, devkit, label, str(folder))
        if why:
            skipped.append(Skip(key, where, why))
        else:
            items.append(Item(key, y, FileRef(str(p)), where))
    skipped += [Skip(stem(rel), _rel(root, folder / rel), why) for rel, why in odd]
    return finish_split(items, skipped)
