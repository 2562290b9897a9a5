"""MNIST-format (IDX) files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` and the
``t10k-*`` pair (the ``val`` split), gzipped or not, as in MNIST and Fashion-MNIST.

The labels are the files' own; class names are Fashion-MNIST's when the folder's path says
``fashion``, else the digits. Keys are ``train_<n>`` / ``t10k_<n>`` (position in the file).
"""

from __future__ import annotations

from pathlib import Path

from alexnet.data.fashion_mnist import DIGIT_CLASSES, FASHION_CLASSES
from alexnet.data.idx import IDX_FILES, find_idx_file, read_idx
from alexnet.data.prepare.items import ArrayRef, Item, SourcePlan, SplitPlan, finish_split
from alexnet.errors import UserError


def detect(root: Path) -> bool:
    return root.is_dir() and any((root / (IDX_FILES[s][0] + gz)).is_file() for s in IDX_FILES for gz in ("", ".gz"))


def scan(root: Path) -> SourcePlan:
    fashion = "fashion" in str(root.resolve()).lower()
    splits: dict[str, SplitPlan] = {}
    top = 0
    for split, (img_stem, lab_stem) in IDX_FILES.items():
        if not any((root / (img_stem + gz)).is_file() for gz in ("", ".gz")):
            splits[split] = SplitPlan()
            continue
        img_path, lab_path = find_idx_file(root, img_stem), find_idx_file(root, lab_stem)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{root}: {img_path.name} and {lab_path.name} do not match (shapes {images.shape}, {labels.shape})"
            )
        prefix = img_stem.split("-", 1)[0]
        width = max(5, len(str(len(images) - 1)))
        items = [
            Item(f"{prefix}_{i:0{width}d}", int(y), ArrayRef(images[i]), f"{img_path.name}[{i}]")
            for i, y in enumerate(labels.tolist())
        ]
        top = max(top, int(labels.max(initial=0)) + 1)
        splits[split] = finish_split(items, [])
    # Fashion-MNIST's or the digits' names for the labels the files hold (a subset with fewer
    # classes keeps the first ones' names), numbers past them.
    names = FASHION_CLASSES if fashion else DIGIT_CLASSES
    names = names[:top] if top <= len(names) else tuple(str(i) for i in range(top))
    classes = [(str(i), n) for i, n in enumerate(names)]
    return SourcePlan("idx", "fashion-mnist" if fashion else "mnist", classes, splits, [f"IDX files in {root}"])
