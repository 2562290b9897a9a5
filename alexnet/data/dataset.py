"""The data interface every source implements, and the in-memory implementation.

A :class:`Dataset` has a ``train`` and a ``val`` split and yields uint8 ``N,C,H,W`` batches with
int64 labels, in an order fixed by a :class:`BatchPlan`. Small sets (Fashion-MNIST, CIFAR,
synthetic) live in memory as tensors (:class:`TensorDataset`); prepared ImageNet shards
implement the same interface by streaming.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from alexnet.data.presets import ColourStats, TrainAugment, colour_eigen
from alexnet.data.seeding import generator

SPLITS = ("train", "val")  # every data source has these two; "val" is the held-out one
MIN_CLASSES = 2  # a classifier needs two classes to tell apart; `train` refuses fewer, `prepare` warns


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a checkpoint need to know about a dataset.

    ``mean``/``std`` are per-channel, in 0-255 pixel units, measured on the training split.
    """

    name: str
    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    synthetic: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class BatchPlan:
    """Which samples one process reads, in which order.

    The order is a function of (seed, epoch) only. A *global* batch of ``global_batch`` samples
    is split into ``world_size`` contiguous shares of equal size; process ``rank`` reads its
    share. Training drops the last incomplete global batch (the paper's batches are always 128);
    evaluation keeps every sample, split round-robin so each is counted exactly once.
    """

    global_batch: int
    shuffle: bool = False
    seed: int = 0
    epoch: int = 0
    start_step: int = 0
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.global_batch % self.world_size:
            raise ValueError(f"batch {self.global_batch} does not split evenly over {self.world_size} processes")

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def steps(self, num_samples: int) -> int:
        """Number of global batches in one epoch."""
        if self.drop_last:
            return num_samples // self.global_batch
        return -(-num_samples // self.global_batch)

    def local_indices(self, num_samples: int) -> Iterator[torch.Tensor]:
        """Sample indices of this process's share of each global batch from ``start_step`` on."""
        order = (
            torch.randperm(num_samples, generator=generator("shuffle", self.seed, self.epoch))
            if self.shuffle
            else torch.arange(num_samples)
        )
        for step in range(self.start_step, self.steps(num_samples)):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            if self.drop_last:
                yield batch[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
            else:
                yield batch[self.rank :: self.world_size]


class Dataset(ABC):
    """A labelled image dataset with ``train`` and ``val`` splits."""

    info: DatasetInfo
    train_augment: TrainAugment
    eval_crop: int

    @abstractmethod
    def num_samples(self, split: str) -> int:
        """Number of samples in ``split``."""

    @abstractmethod
    def batches(self, split: str, plan: BatchPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 ``N,C,H,W`` images and int64 labels of this process's share, batch by batch."""

    def colour_stats(self) -> ColourStats | None:
        """Mean image and RGB eigenpairs of the training split (``None`` if unknown)."""
        return None

    def describe(self) -> str:
        """One line for logs; says loudly when the data is synthetic."""
        kind = "SYNTHETIC data (not a real dataset)" if self.info.synthetic else "data"
        sizes = ", ".join(f"{s} {self.num_samples(s):,}" for s in SPLITS)
        return (
            f"{kind} {self.info.name}: {sizes}; {self.info.num_classes} classes, "
            f"{self.info.channels}x{self.info.image_size}x{self.info.image_size}"
        )


class TensorDataset(Dataset):
    """A dataset held in memory as uint8 tensors."""

    def __init__(
        self,
        info: DatasetInfo,
        splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
        train_augment: TrainAugment,
        eval_crop: int,
    ) -> None:
        for name, (images, labels) in splits.items():
            if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
                raise ValueError(f"split {name}: expected uint8 N,C,H,W images and N labels")
        self.info, self.splits = info, splits
        self.train_augment, self.eval_crop = train_augment, eval_crop
        self._colour: ColourStats | None = None

    def num_samples(self, split: str) -> int:
        return len(self.splits[split][1])

    def colour_stats(self) -> ColourStats:
        """Computed from the training images on first use (float64 sums)."""
        if self._colour is None:
            self._colour = colour_stats_of(self.splits["train"][0])
        return self._colour

    def batches(self, split: str, plan: BatchPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.splits[split]
        for idx in plan.local_indices(len(labels)):
            yield images[idx], labels[idx]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (0-255 units) of uint8 ``N,C,H,W`` images."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double()
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def colour_stats_of(images: torch.Tensor, chunk: int = 4096) -> ColourStats:
    """Mean image and (for RGB) eigenpairs of the pixel covariance of uint8 ``N,C,H,W`` images."""
    n, c = images.shape[:2]
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    moments = torch.zeros(c, c, dtype=torch.float64)
    for start in range(0, n, chunk):
        block = images[start : start + chunk].double()
        total += block.sum(0)
        pixels = block.transpose(0, 1).reshape(c, -1)
        moments += pixels @ pixels.T
    mean_image = (total / n).float()
    if c != 3:
        return ColourStats(mean_image)
    count = n * images.shape[2] * images.shape[3]
    mean = (total / n).reshape(c, -1).mean(1)
    cov = moments / count - torch.outer(mean, mean)
    values, vectors = colour_eigen(cov)
    return ColourStats(mean_image, torch.from_numpy(values).float(), torch.from_numpy(vectors).float())
