"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) and MNIST from their IDX files.

Debian ships Fashion-MNIST as the package ``dataset-fashion-mnist``; its files live in
:data:`DEFAULT_DIR`. The 10,000-image test set is the ``val`` split.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.data.dataset import DatasetInfo, TensorDataset, channel_stats
from alexnet.data.idx import IDX_FILES, find_idx_file, read_idx
from alexnet.data.presets import TrainAugment
from alexnet.errors import UserError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(d) for d in range(10))

# 28x28 images: zero-pad by 2 and take random 28x28 crops (translations of up to 2 px) and
# mirror them; the small-image counterpart of the paper's 227-of-256 crops.
SMALL_AUGMENT = TrainAugment(crop=28, pad=2, flip=True)


def load_idx_dataset(folder: str | Path, name: str, classes: tuple[str, ...], flip: bool = True) -> TensorDataset:
    """Load an MNIST-format folder (the four IDX files, gzipped or not)."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = " (install it: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
        raise UserError(f"{name}: folder not found: {folder}{hint}")
    splits = {}
    for split, (img_stem, lab_stem) in IDX_FILES.items():
        images = read_idx(find_idx_file(folder, img_stem))
        labels = read_idx(find_idx_file(folder, lab_stem))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{folder}: {img_stem} and {lab_stem} do not match (shapes {images.shape}, {labels.shape})")
        if labels.size and labels.max() >= len(classes):
            raise UserError(f"{folder}: label {int(labels.max())} out of range for {len(classes)} classes")
        splits[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64")))
    side = splits["train"][0].shape[-1]
    mean, std = channel_stats(splits["train"][0])
    info = DatasetInfo(name=name, classes=classes, channels=1, image_size=side, mean=mean, std=std)
    augment = TrainAugment(crop=side, pad=SMALL_AUGMENT.pad, flip=flip)
    return TensorDataset(info, splits, augment, eval_crop=side)


def fashion_mnist(folder: str | Path | None = None) -> TensorDataset:
    """Fashion-MNIST from ``folder`` (default: Debian's :data:`DEFAULT_DIR`)."""
    return load_idx_dataset(folder or DEFAULT_DIR, "fashion-mnist", FASHION_CLASSES)


def mnist(folder: str | Path) -> TensorDataset:
    """MNIST digits from ``folder``; no flips (a mirrored digit is another symbol)."""
    return load_idx_dataset(folder, "mnist", DIGIT_CLASSES, flip=False)
