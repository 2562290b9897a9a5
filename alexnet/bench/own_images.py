"""Small real image-folder datasets for the "your own images" proof (issue 11).

Each builder writes a class-folder tree ``ROOT/NAME/{train,val}/<class>/*.png`` from data that
is on the machine without a download: Debian's Fashion-MNIST, and the images scikit-learn
ships inside its wheel (``load_digits``, ``load_sample_images``). The trees are then fed through
the user's path (``alexnet prepare TREE OUT --size 32``, ``alexnet train --data OUT``), so the
proof exercises exactly what a practitioner runs. Everything is deterministic (fixed seeds,
first-N selections).

=================  =======  ======  ===========  =========================================
name               classes  colour  source side  what
=================  =======  ======  ===========  =========================================
``fmnist-1k5``     10       gray    28           Fashion-MNIST, 150 train / 100 val per class
``fmnist-pair``    2        gray    28           Fashion-MNIST T-shirt vs Shirt, 600 / 200
``digits``         10       gray    8            scikit-learn's 8x8 digits (UCI), 4/5 train
``photo-regions``  8        RGB     32           patches of the 2 sample photos, by quadrant
=================  =======  ======  ===========  =========================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.errors import UserError


def _write(root: Path, split: str, label: str, index: int, pixels: np.ndarray) -> None:
    folder = root / split / label
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / f"{index:05d}.png")


def _fashion_subset(root: Path, classes: tuple[int, ...], train_per_class: int, val_per_class: int) -> None:
    from alexnet.data.fashion_mnist import FASHION_CLASSES, fashion_mnist

    data = fashion_mnist()
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        images, labels = data.splits[split]
        for c in classes:
            idx = (labels == c).nonzero().flatten()[:per_class]
            name = FASHION_CLASSES[c].replace("/", "-")
            for i in idx.tolist():
                _write(root, split, name, i, images[i, 0].numpy())


def fmnist_1k5(root: Path) -> None:
    """Ten Fashion-MNIST classes, 150 training images each (the issue's ~1,500-image case)."""
    _fashion_subset(root, tuple(range(10)), 150, 100)


def fmnist_pair(root: Path) -> None:
    """The hardest Fashion-MNIST pair (T-shirt/top vs Shirt), 600 training images each."""
    _fashion_subset(root, (0, 6), 600, 200)


def _sklearn():
    try:
        from sklearn import datasets
    except ImportError:
        raise UserError("these datasets need scikit-learn (pip install scikit-learn)") from None
    return datasets


def digits(root: Path) -> None:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0-16, scaled to 0-255); every fifth
    image of each class is held out."""
    d = _sklearn().load_digits()
    pixels = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    seen: dict[int, int] = {}
    for i, (img, label) in enumerate(zip(pixels, d.target)):
        k = seen[label] = seen.get(label, -1) + 1
        _write(root, "val" if k % 5 == 4 else "train", str(label), i, img)


def photo_regions(root: Path, train_per_class: int = 200, val_per_class: int = 50) -> None:
    """Colour texture classes: which quadrant of which sample photo (china, flower) a random
    48-96 px patch, resized to 32 px, comes from. Val patches are fresh draws (they may overlap
    training patches: this measures learning texture and colour, not generalisation to new scenes)."""
    photos = _sklearn().load_sample_images().images
    rng = np.random.default_rng(0)
    for p, photo in enumerate(photos):
        h, w = photo.shape[:2]
        for q in range(4):
            top0, left0 = (q // 2) * h // 2, (q % 2) * w // 2
            for split, count in (("train", train_per_class), ("val", val_per_class)):
                for i in range(count):
                    side = int(rng.integers(48, 97))
                    top = top0 + int(rng.integers(0, h // 2 - side + 1))
                    left = left0 + int(rng.integers(0, w // 2 - side + 1))
                    patch = Image.fromarray(photo[top : top + side, left : left + side]).resize((32, 32), Image.BILINEAR)
                    _write(root, split, f"photo{p}-q{q}", i, np.asarray(patch))


BUILDERS: dict[str, Callable[[Path], None]] = {
    "fmnist-1k5": fmnist_1k5,
    "fmnist-pair": fmnist_pair,
    "digits": digits,
    "photo-regions": photo_regions,
}


def build(root: str | Path, names: tuple[str, ...] = tuple(BUILDERS)) -> list[Path]:
    """Write the class-folder trees ``root/NAME`` (skipping those already there); their paths."""
    made = []
    for name in names:
        tree = Path(root) / name
        if not (tree / "val").is_dir():
            BUILDERS[name](tree)
        made.append(tree)
    return made


def pixel_logistic_regression(prepared: str | Path) -> float:
    """Validation accuracy of a logistic regression on standardised raw pixels of a prepared
    dataset: the simple non-deep baseline of the proof table (scikit-learn)."""
    import torch

    from alexnet.data import BatchPlan, open_dataset

    linear_model = _sklearn_linear()
    dataset = open_dataset(str(prepared))

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        parts = list(dataset.batches(split, BatchPlan(1000)))
        x = torch.cat([p[0] for p in parts]).flatten(1).float().numpy()
        return x, torch.cat([p[1] for p in parts]).numpy()

    (x, y), (xv, yv) = arrays("train"), arrays("val")
    mean, std = x.mean(0), x.std(0) + 1e-6
    clf = linear_model.LogisticRegression(max_iter=300, C=0.01).fit((x - mean) / std, y)
    return float(clf.score((xv - mean) / std, yv))


def _sklearn_linear():
    _sklearn()  # the one-line error when scikit-learn is missing
    import sklearn.linear_model

    return sklearn.linear_model
