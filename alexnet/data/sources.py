"""Turn a ``--data`` SOURCE string into a :class:`~alexnet.data.dataset.Dataset`.

SOURCE is one of

* ``fashion-mnist`` or ``fashion-mnist:DIR``: Fashion-MNIST IDX files (default: Debian's folder);
* ``mnist:DIR``: MNIST IDX files;
* ``cifar10:PATH`` / ``cifar100:PATH``: the python-version tarball or its folder (``alexnet.data.cifar``);
* ``synthetic`` or ``synthetic:classes=10,size=32,train=2048,val=512,channels=3``;
* a folder written by ``alexnet prepare`` (it holds ``manifest.json``);

any in-memory one followed by ``@train=N,val=M`` for a fixed subset (``alexnet.data.subset``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from alexnet.data.dataset import Dataset
from alexnet.data.fashion_mnist import fashion_mnist, mnist
from alexnet.data.subset import SEPARATOR, parse_subset, subset
from alexnet.data.synthetic import synthetic
from alexnet.errors import UserError

_SYNTHETIC_KEYS = ("classes", "size", "train", "val", "channels", "seed")


def _open_synthetic(arg: str | None) -> Dataset:
    options: dict[str, int] = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in _SYNTHETIC_KEYS or not value.isdigit():
            raise UserError(f"bad synthetic option {item!r}; use key=INT with keys {', '.join(_SYNTHETIC_KEYS)}")
        options[key] = int(value)
    try:
        return synthetic(**options)
    except ValueError as e:
        raise UserError(str(e)) from None


def _require_dir(name: str, open_dir: Callable[[str], Dataset]) -> Callable[[str | None], Dataset]:
    def opener(arg: str | None) -> Dataset:
        if not arg:
            raise UserError(f"{name} needs a folder: --data {name}:DIR")
        return open_dir(arg)

    return opener


def _cifar(path: str, name: str) -> Dataset:
    from alexnet.data.cifar import cifar  # the prepare package only when asked for

    return cifar(path, name)


SOURCES: dict[str, Callable[[str | None], Dataset]] = {
    "fashion-mnist": lambda arg: fashion_mnist(arg or None),
    "mnist": _require_dir("mnist", mnist),
    "cifar10": _require_dir("cifar10", lambda path: _cifar(path, "cifar-10")),
    "cifar100": _require_dir("cifar100", lambda path: _cifar(path, "cifar-100")),
    "synthetic": _open_synthetic,
}


def open_dataset(source: str, workers: int = 0) -> Dataset:
    """Open the dataset named by ``source`` (see the module docstring).

    ``workers``: decoding processes for prepared datasets (in-memory sources ignore it).
    """
    base, sep, spec = source.rpartition(SEPARATOR)
    if sep and base and not os.path.exists(source):
        return subset(open_dataset(base, workers), parse_subset(spec))
    if os.path.isdir(source):
        from alexnet.data.prepare.manifest import MANIFEST
        from alexnet.data.prepare.plan import WORK
        from alexnet.data.prepared import PreparedDataset

        if os.path.isfile(os.path.join(source, MANIFEST)):
            return PreparedDataset(source, workers=workers)
        if os.path.isdir(os.path.join(source, WORK)):  # `prepare` writes its manifest last
            raise UserError(f"{source} is an unfinished `alexnet prepare` output (no {MANIFEST} yet); "
                            "finish it by running the same prepare command again")  # fmt: skip
        if source not in SOURCES:  # a folder that happens to be called "synthetic" means the source
            raise UserError(
                f"{source} is a folder but not a prepared dataset (no {MANIFEST}); "
                f"run `alexnet prepare {source} OUT` and pass --data OUT"
            )
    scheme, _, arg = source.partition(":")
    if scheme in SOURCES:
        return SOURCES[scheme](arg or None)
    if os.sep in source or source.startswith((".", "~")) or os.path.exists(source):  # meant as a path
        what = "is not a folder" if os.path.exists(source) else "not found"
        raise UserError(f"data folder {source} {what}; pass a folder made by `alexnet prepare` (or see --help for sources)")
    raise UserError(
        f"unknown data source {source!r}; use one of: fashion-mnist[:DIR], mnist:DIR, cifar10:PATH, cifar100:PATH, "
        "synthetic[:key=value,...], "
        "or a folder made by `alexnet prepare`"
    )
