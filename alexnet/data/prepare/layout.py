"""Which layout SOURCE is in, and the scanner that lists it.

``auto`` tries, in this order: ``kaggle`` (``LOC_synset_mapping.txt``), ``ilsvrc`` (the official
tars, the devkit, or their extracted folders), ``cifar`` (the python tarball or batches folder),
``idx`` (``train-images-idx3-ubyte``) and ``folder`` (class sub-folders). The first that matches
wins; ``--layout`` skips the guessing.
"""

from __future__ import annotations

from pathlib import Path

from alexnet.data.prepare import cifar, folder, idx, ilsvrc, kaggle
from alexnet.data.prepare.items import SourcePlan
from alexnet.errors import UserError

LAYOUTS = ("ilsvrc", "kaggle", "folder", "idx", "cifar")
_ORDER = ("kaggle", "ilsvrc", "cifar", "idx", "folder")
_DETECT = {
    "kaggle": kaggle.detect,
    "ilsvrc": ilsvrc.detect,
    "cifar": cifar.detect,
    "idx": idx.detect,
    "folder": folder.detect,
}
LOOKED_FOR = (
    "ilsvrc (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz or their folders), "
    "kaggle (LOC_synset_mapping.txt), cifar (cifar-10/100-python tarball or folder), "
    "idx (train-images-idx3-ubyte[.gz]), folder (SOURCE/<class>/* or SOURCE/train/<class>/*)"
)


def detect(source: Path) -> str:
    """The layout of ``source``; a one-line :class:`UserError` naming what was looked for."""
    if not source.exists():
        raise UserError(f"{source} does not exist; give the folder (or CIFAR tarball) that holds the dataset")
    for name in _ORDER:
        if _DETECT[name](source):
            return name
    raise UserError(f"{source}: no known dataset layout found; looked for {LOOKED_FOR}; or pass --layout")


def scan(source: Path, layout: str = "auto", val_fraction: float | None = None, progress: bool = False) -> SourcePlan:
    """List ``source`` in ``layout`` (``auto``: detect it)."""
    if layout == "auto":
        layout = detect(source)
    elif layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
    elif not source.exists():
        raise UserError(f"{source} does not exist; give the folder (or CIFAR tarball) that holds the dataset")
    elif not _DETECT[layout](source):
        raise UserError(f"{source} is not in the {layout} layout; it needs {_needs(layout)}")
    if val_fraction is not None and layout != "folder":
        raise UserError(f"--val-fraction only applies to a single class-folder tree, not to the {layout} layout")
    if layout == "ilsvrc":
        return ilsvrc.scan(source, progress=progress)
    if layout == "kaggle":
        return kaggle.scan(source)
    if layout == "folder":
        return folder.scan(source, val_fraction)
    if layout == "idx":
        return idx.scan(source)
    return cifar.scan(source)


def _needs(layout: str) -> str:
    start = LOOKED_FOR.index(layout + " (") + len(layout) + 2
    return LOOKED_FOR[start : LOOKED_FOR.index(")", start)]
