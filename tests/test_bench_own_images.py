"""The own-images proof datasets: the 100-class and the larger-image builders of alexnet.bench.own_images.

Built at a tiny size (1-2 images per class): class counts, shapes, labels and the train/val split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.bench import own_images
from tests.helpers.cli import needs_fashion

pytest.importorskip("sklearn")


def _tree(root: Path, split: str) -> dict[str, list[np.ndarray]]:
    return {d.name: [np.asarray(Image.open(f)) for f in sorted(d.iterdir())] for d in sorted((root / split).iterdir())}


@needs_fashion
def test_fmnist_pairs100_has_100_classes_of_two_real_items(tmp_path: Path) -> None:
    from alexnet.data.fashion_mnist import fashion_mnist

    own_images.fmnist_pairs100(tmp_path, train_per_class=1, val_per_class=1)
    data = fashion_mnist()
    for split in ("train", "val"):
        tree = _tree(tmp_path, split)
        assert len(tree) == 100 and all(len(images) == 1 for images in tree.values())
        images, labels = data.splits[split]
        labels_of: dict[bytes, set[int]] = {}  # an item's pixels -> the labels of the items with them
        for item, label in zip(images[:, 0].numpy(), labels.tolist()):
            labels_of.setdefault(item.tobytes(), set()).add(label)
        tops = []
        for name, (img,) in tree.items():
            a, b = int(name[0]), int(name[1])
            assert img.shape == (56, 56) and img[:, :14].max() == 0 and img[:, 42:].max() == 0
            # both halves are real items of this split, of the classes the folder names (top a, bottom b)
            for half, want in ((img[:28, 14:42], a), (img[28:, 14:42], b)):
                assert want in labels_of.get(np.ascontiguousarray(half).tobytes(), set()), (split, name)
            tops.append(img[:28].tobytes())
        assert len(set(tops)) == 100  # no item is used twice as a top within a split


def test_photo_scenes_val_comes_from_a_held_out_band(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    own_images.photo_scenes(tmp_path, train_per_class=2, val_per_class=1)
    photos = own_images._bundled_photos()
    train, val = _tree(tmp_path, "train"), _tree(tmp_path, "val")
    assert sorted(train) == sorted(val) == sorted(photos) and len(photos) == 10
    for name, photo in photos.items():
        h, w = photo.shape[:2]
        band = int(w * own_images._SCENE_VAL_BAND)
        for split, patches in (("train", train[name]), ("val", val[name])):
            for patch in patches:
                side = patch.shape[0]
                assert patch.shape == (side, side, 3) and side >= int(min(h, w) * own_images._SCENE_SIDE[0])
                # where the patch lies in its photo: val only in the right band, train only left of it
                columns = [x for _, x in _placements(photo, patch)]
                assert columns, (split, name)
                inside = [x >= w - band if split == "val" else x + side <= w - band for x in columns]
                assert all(inside), (split, name, columns)
    assert own_images.PREPARE_SIZE["photo-scenes"] == 72 and own_images.PREPARE_SIZE["fmnist-pairs100"] == 32


def _placements(photo: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) at which ``patch`` is an exact crop of ``photo``."""
    side, (h, w) = patch.shape[0], photo.shape[:2]
    candidates = np.ones((h - side + 1, w - side + 1), bool)
    for y, x in ((0, 0), (side - 1, side - 1), (side // 2, side // 2), (0, side - 1)):  # a few pixels first: cheap
        candidates &= (photo[y : y + h - side + 1, x : x + w - side + 1] == patch[y, x]).all(axis=2)
    return [(int(t), int(l)) for t, l in zip(*candidates.nonzero())
            if np.array_equal(photo[t : t + side, l : l + side], patch)]  # fmt: skip
