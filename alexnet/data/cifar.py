"""CIFAR-10 and CIFAR-100 in memory, read straight from the python-version download.

``--data cifar10:PATH`` (or ``cifar100:PATH``): PATH is the tarball (``cifar-10-python.tar.gz``)
or its extracted folder, or a folder holding either; the batches are read with
``alexnet prepare``'s safe reader (:mod:`alexnet.data.prepare.cifar`), once per process (~1 s
for CIFAR-10), and kept as uint8 tensors (180 MB). The test batch is the ``val`` split. Crops
follow a prepared 32 px dataset's (:func:`~alexnet.data.prepared.crop_for`: random 28 of 32 for
training, the centre 28 for evaluation, mirrors), so a run on ``cifar10:PATH`` and one on
``alexnet prepare PATH OUT --size 32`` see the same images the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alexnet.data.dataset import DatasetInfo, TensorDataset, channel_stats
from alexnet.data.prepare.cifar import read_batches
from alexnet.data.prepared import crop_for
from alexnet.data.presets import TrainAugment
from alexnet.errors import UserError


def cifar(path: str | Path, expect: str) -> TensorDataset:
    """The CIFAR download at ``path``; ``expect`` (``cifar-10`` / ``cifar-100``) must match it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{expect}: not found: {path} (the python version: {expect}-python.tar.gz or its folder)")
    b = read_batches(path)
    if b.name != expect:
        raise UserError(f"{path} holds {b.name}, not {expect}; use --data {b.name.replace('-', '')}:{path}")
    splits = {}
    for split, batches in b.splits.items():
        if not batches:
            raise UserError(f"{b.found}: no {split} batches")
        images = np.concatenate([data for _, data, _ in batches])
        labels = [y for _, _, ys in batches for y in ys]
        splits[split] = (torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64))
    mean, std = channel_stats(splits["train"][0])
    info = DatasetInfo(name=b.name, classes=tuple(b.classes), channels=3, image_size=32, mean=mean, std=std)
    crop = crop_for(32)
    return TensorDataset(info, splits, TrainAugment(crop=crop, pad=0, flip=True), eval_crop=crop)
