"""Paper-size data for an experiment: a budget's subset of a 28 px source, prepared at 256 px.

The paper net sees 227 px crops of 256 px images (sections 2 and 4.1). An in-memory grey source
(Fashion-MNIST, MNIST, a synthetic set) reaches that size the way a user's data does: the
budget's fixed subset (``SOURCE@train=N,val=M``, :mod:`alexnet.data.subset`) is written as IDX
files, then ``alexnet prepare --size 256`` stores it as shards with its mean image and colour
statistics. Both steps are skipped when already done and resume when killed (``prepare``'s
own guarantee). A folder already written by ``alexnet prepare`` is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from alexnet.data.idx import IDX_FILES, write_idx
from alexnet.data.prepare.manifest import MANIFEST
from alexnet.errors import UserError


def is_prepared(data: str) -> bool:
    """Whether ``data`` names a folder written by ``alexnet prepare``."""
    return os.path.isfile(os.path.join(data, MANIFEST))


def prepared_folder(root: Path, source: str, size: int) -> Path:
    """Where the plan keeps ``source`` (a ``SOURCE@train=N,val=M`` string) prepared at ``size``.

    The folder name keeps the source's name ("fashion" in it gives the prepared set
    Fashion-MNIST's class names) and the subset, so budgets never share a folder.
    """
    name = source.replace(":", "-").replace("/", "-").replace("@", "-").replace(",", "-").replace("=", "")
    return root / "data" / f"{name}-{size}px"


def ensure_prepared(source: str, folder: Path, size: int, log: Callable[[str], None]) -> None:
    """Prepare ``source`` into ``folder`` at ``size`` px unless that is done (see the module docstring)."""
    from alexnet.data import open_dataset
    from alexnet.data.dataset import TensorDataset
    from alexnet.data.prepare.run import Settings, prepare

    if is_prepared(str(folder)):
        return
    dataset = open_dataset(source)
    if not isinstance(dataset, TensorDataset) or dataset.info.channels != 1:
        raise UserError(f"{source}: only grey in-memory sources (fashion-mnist, mnist:DIR) are prepared here; "
                        f"prepare other data yourself (alexnet prepare SOURCE OUT --size {size}) and pass --data OUT")  # fmt: skip
    idx = folder.with_name(folder.name + "-idx")
    idx.mkdir(parents=True, exist_ok=True)
    for split, (images_stem, labels_stem) in IDX_FILES.items():
        images, labels = dataset.splits[split]
        if not (idx / images_stem).is_file():
            write_idx(idx / labels_stem, labels.numpy())
            write_idx(idx / images_stem, images[:, 0].numpy())  # written last: its presence means both are
    log(f"preparing {dataset.describe()} at {size} px in {folder}")
    prepare(idx, folder, layout="idx", settings=Settings(size=size), progress=False, log=log)
