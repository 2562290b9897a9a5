"""A deterministic synthetic dataset for tests and throughput benchmarks.

Each class is a fixed random low-frequency colour pattern; samples are that pattern, shifted by
a few pixels, scaled in contrast and with pixel noise added. A network can learn it (so tests
can check that training works) and the same arguments always give the same bytes. Everything
that uses it says that it is synthetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alexnet.data.dataset import MIN_CLASSES, DatasetInfo, TensorDataset, channel_stats
from alexnet.data.presets import TrainAugment
from alexnet.data.seeding import generator

# The synthetic set lives in memory: refuse sizes that would exhaust it (8 GiB of working set
# holds ~500M pixel values per split, e.g. 160,000 images of 3x32x32) with a clear message.
MAX_BUILD_BYTES = 8 << 30


def build_bytes(classes: int, size: int, images: int, channels: int) -> int:
    """Peak memory of building a split of ``images``: float32 templates, and four float32
    temporaries (noise, pattern, shifted, scaled) plus the uint8 result per image."""
    pixels = channels * size * size
    return 4 * classes * pixels + 17 * images * pixels


def synthetic(
    classes: int = 10, size: int = 32, train: int = 2048, val: int = 512, channels: int = 3, seed: int = 0
) -> TensorDataset:
    """Build the synthetic dataset (``classes`` patterns of ``channels x size x size``)."""
    if classes < MIN_CLASSES or size < 8 or train < 1 or val < 1 or channels not in (1, 3):
        raise ValueError(f"synthetic needs classes >= {MIN_CLASSES}, size >= 8, train >= 1, val >= 1, channels 1 or 3")
    need = build_bytes(classes, size, max(train, val), channels)
    if need > MAX_BUILD_BYTES:
        raise ValueError(
            f"synthetic data of {max(train, val):,} images of {channels}x{size}x{size} ({classes:,} classes) would need "
            f"{need / 2**30:,.0f} GiB of memory to build (at most {MAX_BUILD_BYTES // 2**30} GiB); use fewer or smaller images"
        )
    g = generator("synthetic-templates", seed, classes, size, channels)
    coarse = torch.rand(classes, channels, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def make(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        gs = generator("synthetic-samples", seed, split, classes, size, channels)
        labels = torch.randint(0, classes, (n,), generator=gs)
        shifts = torch.randint(-2, 3, (n, 2), generator=gs)
        contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=gs)
        noise = 0.15 * torch.randn(n, channels, size, size, generator=gs)
        base = templates[labels]
        shifted = torch.stack([torch.roll(b, (int(dy), int(dx)), (1, 2)) for b, (dy, dx) in zip(base, shifts)])
        images = (shifted * contrast + noise).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return images, labels

    splits = {"train": make("train", train), "val": make("val", val)}
    mean, std = channel_stats(splits["train"][0])
    name = f"synthetic(classes={classes},size={size},train={train},val={val},channels={channels})"
    info = DatasetInfo(
        name=name, classes=tuple(f"class_{i}" for i in range(classes)), channels=channels,
        image_size=size, mean=mean, std=std, synthetic=True,
    )  # fmt: skip
    return TensorDataset(info, splits, TrainAugment(crop=size, pad=2, flip=True), eval_crop=size)
