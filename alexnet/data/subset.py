"""Fixed subsets of an in-memory dataset: ``SOURCE@train=N,val=M`` (quick experiments).

The subset is the first N (M) samples (the whole split if it is smaller) of a permutation keyed by the split name alone, so every
run, arm and seed that names the same subset trains on exactly the same images. The per-channel
statistics are recomputed on the subset's training images (the data the run actually sees).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from alexnet.data.dataset import Dataset, TensorDataset, channel_stats
from alexnet.data.seeding import generator
from alexnet.errors import UserError

SEPARATOR = "@"
_KEYS = ("train", "val")


def parse_subset(spec: str) -> dict[str, int]:
    """``train=N,val=M`` (either key may be missing) as a dict; a :class:`UserError` if malformed."""
    sizes: dict[str, int] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in _KEYS or not value.isdigit() or int(value) < 1:
            raise UserError(f"bad subset option {item!r}; use train=N,val=M (whole numbers >= 1) after {SEPARATOR}")
        sizes[key] = int(value)
    if not sizes:
        raise UserError(f"empty subset after {SEPARATOR}; use e.g. {SEPARATOR}train=12000,val=2000")
    return sizes


def subset(dataset: Dataset, sizes: dict[str, int]) -> TensorDataset:
    """The first ``sizes[split]`` samples of a fixed permutation of each named split (at most all)."""
    if not isinstance(dataset, TensorDataset):
        raise UserError(
            f"{dataset.info.name}: subsets ({SEPARATOR}train=N,...) work on in-memory sources "
            "(fashion-mnist, mnist, synthetic), not on prepared folders"
        )
    splits = dict(dataset.splits)
    for split, n in sizes.items():
        images, labels = splits[split]
        order = _permutation(split, len(labels))[:n].sort().values
        splits[split] = (images[order], labels[order])
    mean, std = channel_stats(splits["train"][0])
    label = ",".join(f"{k}={min(v, dataset.num_samples(k))}" for k, v in sizes.items())
    info = replace(dataset.info, name=f"{dataset.info.name}{SEPARATOR}{label}", mean=mean, std=std)
    return TensorDataset(info, splits, dataset.train_augment, dataset.eval_crop)


def _permutation(split: str, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=generator("subset", split, n))
