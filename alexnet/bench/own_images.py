"""Small real image-folder datasets for the "your own images" proof (docs/RESULTS.md).

Each builder writes a class-folder tree ``ROOT/NAME/{train,val}/<class>/*.png`` from data that
is on the machine without a download: Debian's Fashion-MNIST, and the images scikit-learn and
scikit-image ship inside their wheels (``load_digits``, ``load_sample_images``,
``skimage.data``). The trees are then fed through the user's path (``alexnet prepare TREE OUT
--size N``, ``alexnet train --data OUT``), so the proof exercises exactly what a practitioner
runs. Everything is deterministic (fixed seeds, first-N selections).

===================  =======  ======  ===========  ========  =============================================
name                 classes  colour  source side  --size    what
===================  =======  ======  ===========  ========  =============================================
``fmnist-1k5``       10       gray    28           32        Fashion-MNIST, 150 train / 100 val per class
``fmnist-pair``      2        gray    28           32        Fashion-MNIST T-shirt vs Shirt, 600 / 200
``digits``           10       gray    8            32        scikit-learn's 8x8 digits (UCI), 4/5 train
``photo-regions``    8        RGB     32           32        patches of the 2 sample photos, by quadrant
``fmnist-pairs100``  100      gray    56           32        two Fashion-MNIST items stacked, 60 / 20
``photo-scenes``     10       RGB     60-423       72        which of 10 bundled photos, 120 / 40, val
                                                             from a held-out band of each photo
===================  =======  ======  ===========  ========  =============================================

``--size`` is the side the proof prepares each tree at (:data:`PREPARE_SIZE`); the network sees
the crop of it (:func:`alexnet.data.prepared.crop_for`: 28 of 32, 64 of 72).
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
    """Ten Fashion-MNIST classes, 150 training images each (the ~1,500-image case)."""
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


def fmnist_pairs100(root: Path, train_per_class: int = 60, val_per_class: int = 20) -> None:
    """100 classes: a Fashion-MNIST item above another, class = (top class, bottom class).

    Each 56x56 image holds two 28x28 items stacked in its central 28 columns (stacked, not side
    by side, so that the horizontal flip of training keeps the label). Train images come from
    the train split, val from the test split; within a split no item is used twice: the top of
    class (a, b)'s k-th image is item ``b * n + k`` of class a, the bottom is item ``half + a * n
    + k`` of class b (``half`` = half the split's items per class). Prepared at 32 px each item
    is ~16 px: the network must recognise both small items and combine them.
    """
    from alexnet.data.fashion_mnist import FASHION_CLASSES, fashion_mnist

    data = fashion_mnist()
    names = [c.replace("/", "-") for c in FASHION_CLASSES]
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        images, labels = data.splits[split]
        by_class = [(labels == c).nonzero().flatten() for c in range(len(names))]
        half = min(len(idx) for idx in by_class) // 2
        if len(names) * n > half:
            raise ValueError(f"{n} images per class need {len(names) * n} items per class; {split} has {2 * half}")
        for a in range(len(names)):
            for b in range(len(names)):
                for k in range(n):
                    top, bottom = by_class[a][b * n + k], by_class[b][half + a * n + k]
                    canvas = np.zeros((56, 56), np.uint8)
                    canvas[:28, 14:42] = images[top, 0].numpy()
                    canvas[28:, 14:42] = images[bottom, 0].numpy()
                    _write(root, split, f"{a}{b}-{names[a]}-over-{names[b]}", k, canvas)


def _bundled_photos() -> dict[str, np.ndarray]:
    """The ten colour photos that scikit-image and scikit-learn ship in their wheels (no download)."""
    try:
        import skimage.data as sk
    except ImportError:
        raise UserError("photo-scenes needs scikit-image (pip install scikit-image)") from None
    china, flower = _sklearn().load_sample_images().images
    photos = {name: getattr(sk, name)() for name in ("astronaut", "chelsea", "coffee", "hubble_deep_field",
                                                     "immunohistochemistry", "retina", "rocket")}  # fmt: skip
    return photos | {"motorcycle": sk.stereo_motorcycle()[0], "china": china, "flower": flower}


# photo-scenes: patch sides as fractions of the photo's short side, the held-out band's share of
# its width, and the smallest pixel standard deviation a patch may have (no black sky or border:
# hubble's and retina's would be the same class-free black).
_SCENE_SIDE = (0.2, 0.3)
_SCENE_VAL_BAND = 0.3
_SCENE_MIN_STD = 8.0


def photo_scenes(root: Path, train_per_class: int = 120, val_per_class: int = 40) -> None:
    """Larger colour images, 10 classes: which bundled photo a square patch comes from.

    Patch sides are 20-30% of the photo's short side (60-423 px; ``alexnet prepare --size 72``
    resizes them, the network sees 64 px). Val patches come from the right 30% of each photo,
    train patches from the rest: no val pixel was seen in training, so this measures
    generalisation to unseen parts of a scene (colour, texture, objects), not memory of them.
    Near-uniform patches (std < 8) are redrawn.
    """
    rng = np.random.default_rng(0)
    for name, photo in _bundled_photos().items():
        h, w = photo.shape[:2]
        band = int(w * _SCENE_VAL_BAND)
        lo, hi = (int(min(h, w) * f) for f in _SCENE_SIDE)
        splits = (("train", train_per_class, 0, w - band), ("val", val_per_class, w - band, w))
        for split, count, x0, x1 in splits:
            k = 0
            while k < count:
                side = int(rng.integers(lo, min(hi, x1 - x0) + 1))
                top, left = int(rng.integers(0, h - side + 1)), x0 + int(rng.integers(0, x1 - x0 - side + 1))
                patch = photo[top : top + side, left : left + side]
                if patch.std() >= _SCENE_MIN_STD:
                    _write(root, split, name, k, np.ascontiguousarray(patch))
                    k += 1


BUILDERS: dict[str, Callable[[Path], None]] = {
    "fmnist-1k5": fmnist_1k5,
    "fmnist-pair": fmnist_pair,
    "digits": digits,
    "photo-regions": photo_regions,
    "fmnist-pairs100": fmnist_pairs100,
    "photo-scenes": photo_scenes,
}

# The side each tree is prepared at for the proof (``alexnet prepare TREE OUT --size N``).
PREPARE_SIZE: dict[str, int] = {name: 32 for name in BUILDERS} | {"photo-scenes": 72}


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
