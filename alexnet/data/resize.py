"""Fitting a dataset to the input size a model was trained on, in the input pipeline.

Pretrained weights expect objects at the scale they were trained on and (for fixed-size
networks) exactly their crop side, so data of another size is mapped to the weights'
``(image_size, crop)`` rather than prepared again: the crop side changes where that is all
that differs, and otherwise every batch is resized (bilinear, antialiased) to the target side
as it is read, the way timm's and torchvision's transforms resize rather than asking for a
new dataset. Images stay uint8, so crops, flips and normalisation downstream are unchanged.
Which target to choose is the caller's decision (``alexnet.training.warmstart``); this module
only applies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from alexnet.data.dataset import BatchPlan, Dataset
from alexnet.data.presets import ColourStats, is_nhwc

# Enlarging images more than this to reach a model's input side invents the detail its filters
# look for (and multiplies the cost by its square): past it there is no sensible mapping.
MAX_ENLARGEMENT = 8.0


def resize_batch(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 ``N,C,H,W`` images resized to ``side x side`` (bilinear, antialiased when shrinking),
    rounded back to uint8, in the memory layout they came in."""
    x = F.interpolate(images.float(), size=(side, side), mode="bilinear", align_corners=False,
                      antialias=side < images.shape[-1])  # fmt: skip
    out = x.round_().clamp_(0, 255).to(torch.uint8)
    return out.contiguous(memory_format=torch.channels_last if is_nhwc(images) else torch.contiguous_format)


class ResizedDataset(Dataset):
    """``base`` with every image resized to ``side`` as it is read (see the module docstring).

    Other attributes (class ids, keys, labels of a prepared dataset) are the base's.
    """

    def __init__(self, base: Dataset, side: int, crop: int) -> None:
        old = base.info.image_size
        self.base, self.side = base, side
        self.info = dataclasses.replace(base.info, image_size=side)
        pad = round(base.train_augment.pad * side / old)  # the same translation range, in the new pixels
        self.train_augment = dataclasses.replace(base.train_augment, crop=crop, pad=pad)
        self.eval_crop = crop
        self._colour: ColourStats | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def num_samples(self, split: str) -> int:
        return self.base.num_samples(split)

    def batches(self, split: str, plan: BatchPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.base.batches(split, plan):
            yield resize_batch(images, self.side), labels

    def colour_stats(self) -> ColourStats | None:
        """The base's statistics with its mean image resized (the colour eigenpairs do not depend on size)."""
        if self._colour is None:
            stats = self.base.colour_stats()
            if stats is None:
                return None
            image = F.interpolate(stats.mean_image[None].float(), size=(self.side, self.side), mode="bilinear",
                                  align_corners=False, antialias=self.side < stats.mean_image.shape[-1])[0]  # fmt: skip
            self._colour = dataclasses.replace(stats, mean_image=image)
        return self._colour


def fit_input_size(dataset: Dataset, image_size: int, crop: int) -> Dataset:
    """``dataset`` as images of side ``image_size`` cropped to ``crop`` (random crops in training,
    the centre in evaluation): the same dataset with another crop when only the crop differs,
    else a :class:`ResizedDataset`."""
    if dataset.info.image_size == image_size:
        if dataset.eval_crop != crop:
            dataset.train_augment = dataclasses.replace(dataset.train_augment, crop=crop)
            dataset.eval_crop = crop
        return dataset
    return ResizedDataset(dataset, image_size, crop)
