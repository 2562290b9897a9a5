"""Fixed subsets of an in-memory dataset: ``SOURCE@train=N,val=M`` and friends (experiments).

Keys after ``@`` (comma-separated, any subset of them):

* ``classes=A-B``: only classes A..B (inclusive), relabelled 0..B-A, in both splits (transfer:
  learn on some classes, reuse the features on the others);
* ``per-class=N`` (with ``draw=S``, default 0): N training images of every class, drawn by a
  permutation per class keyed by the class and ``S`` alone, so for one draw the subsets are
  nested (the first N of a fixed order: 10 per class lie inside 30 per class) and class-balanced;
* ``train=N`` / ``val=M``: the first N (M) samples (the whole split if it is smaller) of a
  permutation keyed by the split name alone;
* ``repeat=K``: the training images K times over, so that an epoch (one validation pass) of a
  small set is K passes over it, each copy with its own random crops and flips.

So every run, arm and seed that names the same subset trains on exactly the same images, and
``val=M`` gives every training size the same test images. The per-channel statistics are
recomputed on the subset's training images (the data the run actually sees).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from alexnet.data.dataset import Dataset, TensorDataset, channel_stats
from alexnet.data.seeding import generator
from alexnet.errors import UserError

SEPARATOR = "@"
_KEYS = ("classes", "per-class", "draw", "train", "val", "repeat")
_USAGE = (
    f"use train=N,val=M,per-class=N,draw=S,repeat=K (whole numbers >= 1, draw >= 0) or classes=A-B after {SEPARATOR}"
)


def parse_subset(spec: str) -> dict[str, int | tuple[int, int]]:
    """``train=N,val=M,per-class=N,draw=S,classes=A-B`` (any of them) as a dict; a
    :class:`UserError` if malformed (``classes`` becomes the pair ``(A, B)``)."""
    sizes: dict[str, int | tuple[int, int]] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if key == "classes" and sep:
            low, dash, high = value.partition("-")
            if dash and low.isdigit() and high.isdigit() and int(low) <= int(high):
                sizes[key] = (int(low), int(high))
                continue
        elif sep and key in _KEYS and value.isdigit() and (int(value) >= 1 or key == "draw"):
            sizes[key] = int(value)
            continue
        raise UserError(f"bad subset option {item!r}; {_USAGE}")
    if not sizes:
        raise UserError(f"empty subset after {SEPARATOR}; use e.g. {SEPARATOR}train=12000,val=2000")
    if "train" in sizes and "per-class" in sizes:
        raise UserError(f"subset: give train=N or per-class=N, not both ({SEPARATOR}{spec})")
    if "draw" in sizes and "per-class" not in sizes:
        raise UserError(f"subset: draw=S picks a per-class=N draw; give per-class=N too ({SEPARATOR}{spec})")
    return sizes


def subset(dataset: Dataset, sizes: dict[str, int | tuple[int, int]]) -> TensorDataset:
    """``dataset`` cut as ``sizes`` says (see the module docstring): classes first, then sizes."""
    if not isinstance(dataset, TensorDataset):
        raise UserError(
            f"{dataset.info.name}: subsets ({SEPARATOR}train=N,...) work on in-memory sources "
            "(fashion-mnist, mnist, synthetic), not on prepared folders"
        )
    splits = dict(dataset.splits)
    classes = dataset.info.classes
    if "classes" in sizes:
        low, high = sizes["classes"]  # type: ignore[misc]
        if high >= len(classes):
            raise UserError(f"subset classes={low}-{high}: {dataset.info.name} has classes 0-{len(classes) - 1}")
        for split, (images, labels) in splits.items():
            keep = (labels >= low) & (labels <= high)
            splits[split] = (images[keep], labels[keep] - low)
        classes = classes[low : high + 1]
    if "per-class" in sizes:
        images, labels = splits["train"]
        order = per_class_indices(labels, int(sizes["per-class"]), int(sizes.get("draw", 0)))  # type: ignore[arg-type]
        splits["train"] = (images[order], labels[order])
    for split in ("train", "val"):
        if split in sizes:
            images, labels = splits[split]
            order = _permutation(split, len(labels))[: int(sizes[split])].sort().values  # type: ignore[call-overload]
            splits[split] = (images[order], labels[order])
    if "repeat" in sizes:
        images, labels = splits["train"]
        k = int(sizes["repeat"])  # type: ignore[arg-type]
        splits["train"] = (images.repeat(k, 1, 1, 1), labels.repeat(k))
    mean, std = channel_stats(splits["train"][0])
    label = ",".join(_label(k, v, splits) for k, v in sizes.items())
    info = replace(dataset.info, name=f"{dataset.info.name}{SEPARATOR}{label}", classes=classes, mean=mean, std=std)
    return TensorDataset(info, splits, dataset.train_augment, dataset.eval_crop)


def per_class_indices(labels: torch.Tensor, n: int, draw: int) -> torch.Tensor:
    """Sorted indices of the first ``n`` images of each class (all of a smaller class) in an
    order fixed by the class and ``draw`` alone: nested in ``n`` for one draw, balanced."""
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        order = torch.randperm(len(members), generator=generator("per-class", c, len(members), draw))
        chosen.append(members[order[:n]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


def _label(key: str, value: int | tuple[int, int], splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    if isinstance(value, tuple):
        return f"{key}={value[0]}-{value[1]}"
    return f"{key}={min(value, len(splits[key][1]))}" if key in ("train", "val") else f"{key}={value}"


def _permutation(split: str, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=generator("subset", split, n))
