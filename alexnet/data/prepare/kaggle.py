"""The Kaggle "ImageNet Object Localization Challenge" download.

SOURCE holds ``LOC_synset_mapping.txt`` (``<wnid> <names>`` per line), ``LOC_val_solution.csv``
(``ImageId,PredictionString`` whose rows are *not* in file order; the first token of the
prediction string is the WNID), ``ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG`` and the flat
``ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<n>.JPEG``. The ``test`` folder has no labels and is
not used. Labels: index of the WNID in the sorted WNIDs of the mapping file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from alexnet.data.prepare.folder import list_files
from alexnet.data.prepare.items import FileRef, Item, Skip, SourcePlan, finish_split, stem
from alexnet.errors import UserError

MAPPING, VAL_CSV = "LOC_synset_mapping.txt", "LOC_val_solution.csv"
DATA = Path("ILSVRC/Data/CLS-LOC")


def detect(root: Path) -> bool:
    return root.is_dir() and (root / MAPPING).is_file()


def read_mapping(path: Path) -> list[tuple[str, str]]:
    """(wnid, names) pairs sorted by WNID."""
    pairs = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition(" ")
        if not wnid or wnid in pairs:
            raise UserError(f"{path}:{n}: expected '<wnid> <names>' with each WNID once; download it again")
        pairs[wnid] = names.strip() or wnid
    if not pairs:
        raise UserError(f"{path} lists no classes; download it again")
    return sorted(pairs.items())


def read_val_solution(path: Path) -> dict[str, str]:
    """ImageId -> WNID (the first token of the PredictionString)."""
    truth = {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise UserError(f"{path}: expected the header 'ImageId,PredictionString'; is it {VAL_CSV}?")
        for n, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) < 2 or not row[1].split():
                raise UserError(f"{path}:{n}: a row without a class; download it again")
            truth[row[0].strip()] = row[1].split()[0]
    return truth


def scan(root: Path) -> SourcePlan:
    classes = read_mapping(root / MAPPING)
    label = {w: i for i, (w, _) in enumerate(classes)}
    train_dir, val_dir = root / DATA / "train", root / DATA / "val"
    if not train_dir.is_dir() and not val_dir.is_dir():
        raise UserError(f"{root}: has {MAPPING} but no {DATA}/train or {DATA}/val; is the download complete?")

    items, skipped, odd = [], [], []
    if train_dir.is_dir():
        for rel in list_files(train_dir, odd):
            p, key = train_dir / rel, stem(rel)
            where = p.relative_to(root).as_posix()
            wnid = rel.split("/", 1)[0] if "/" in rel else None
            if wnid is None:
                skipped.append(Skip(key, where, "not inside a class folder"))
            elif wnid not in label:
                skipped.append(Skip(key, where, f"class folder {wnid} is not in {MAPPING}"))
            else:
                items.append(Item(key, label[wnid], FileRef(str(p)), where))
    skipped += [Skip(stem(rel), (train_dir / rel).relative_to(root).as_posix(), why) for rel, why in odd]
    train = finish_split(items, skipped)

    items, skipped, odd = [], [], []
    if val_dir.is_dir():
        truth = read_val_solution(root / VAL_CSV) if (root / VAL_CSV).is_file() else None
        if truth is None:
            raise UserError(f"{root}: validation labels come from {VAL_CSV}; put it in SOURCE")
        for rel in list_files(val_dir, odd):
            p, key = val_dir / rel, stem(rel)
            where = p.relative_to(root).as_posix()
            wnid = truth.get(key)
            if wnid is None:
                skipped.append(Skip(key, where, f"no row for this image in {VAL_CSV}"))
            elif wnid not in label:
                skipped.append(Skip(key, where, f"class {wnid} (from {VAL_CSV}) is not in {MAPPING}"))
            else:
                items.append(Item(key, label[wnid], FileRef(str(p)), where))
        skipped += [Skip(stem(rel), (val_dir / rel).relative_to(root).as_posix(), why) for rel, why in odd]
    val = finish_split(items, skipped)
    notes = [f"train: {train_dir}", f"val: {val_dir} (labels from {VAL_CSV})"]
    return SourcePlan("kaggle", "imagenet", classes, {"train": train, "val": val}, notes)
