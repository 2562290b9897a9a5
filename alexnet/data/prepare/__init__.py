"""``alexnet prepare``: turn a dataset as users have it into random-access WebDataset shards.

One module per job: :mod:`~.layout` (which layout SOURCE is in), :mod:`~.ilsvrc` (official
tars and devkit, :mod:`~.devkit` for meta.mat), :mod:`~.kaggle`, :mod:`~.folder`, :mod:`~.idx`,
:mod:`~.cifar` (listing each layout), :mod:`~.tars` (reading tars in place), :mod:`~.convert`
(decode, RGB, resize, crop, encode), :mod:`~.shards` (tar shards, atomic writes),
:mod:`~.stats` (exact training-set statistics), :mod:`~.manifest` (the output's description),
:mod:`~.plan` (settings, shards and their digests), :mod:`~.workers` (the conversion pool) and
:mod:`~.run` (the parallel, resumable pipeline). ``docs/prepare.md`` is the user guide.
"""

from alexnet.data.prepare.layout import LAYOUTS, detect
from alexnet.data.prepare.run import PrepareResult, Settings, default_workers, prepare

__all__ = ["LAYOUTS", "PrepareResult", "Settings", "default_workers", "detect", "prepare"]
