"""Where a classifier goes wrong: the confusion matrix, per-class errors, most confused pairs.

Everything is computed from two arrays, the true labels and the top-k predicted labels (best
first) of every evaluated image, so networks and baselines share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfusedPair:
    """``count`` images of class ``true`` were classified as ``predicted`` (top-1)."""

    true: int
    predicted: int
    count: int
    examples: tuple[int, ...]  # sample indices, first few


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``C x C`` counts: row = true class, column = top-1 prediction."""
    flat = labels.astype(np.int64) * num_classes + predicted.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_errors(labels: np.ndarray, topk: np.ndarray, num_classes: int) -> np.ndarray:
    """``C x 3`` float array: images, top-1 error, top-5 error of each true class (NaN errors
    for classes without images). ``topk``: ``N x k`` predicted labels, best first."""
    k = min(5, topk.shape[1])
    hit1 = topk[:, 0] == labels
    hit5 = (topk[:, :k] == labels[:, None]).any(axis=1)
    n = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        err1 = 1.0 - np.bincount(labels, weights=hit1, minlength=num_classes) / n
        err5 = 1.0 - np.bincount(labels, weights=hit5, minlength=num_classes) / n
    return np.stack([n, err1, err5], axis=1)


def most_confused(labels: np.ndarray, predicted: np.ndarray, num_classes: int, top: int = 10,
                  examples: int = 4) -> list[ConfusedPair]:  # fmt: skip
    """The ``top`` (true, predicted) pairs with the most top-1 mistakes, most first (ties by
    class order), each with up to ``examples`` sample indices."""
    matrix = confusion_matrix(labels, predicted, num_classes)
    np.fill_diagonal(matrix, 0)
    flat = matrix.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:top]
    pairs = []
    for f in order:
        if flat[f] == 0:
            break
        t, p = divmod(int(f), num_classes)
        idx = np.flatnonzero((labels == t) & (predicted == p))[:examples]
        pairs.append(ConfusedPair(t, p, int(flat[f]), tuple(int(i) for i in idx)))
    return pairs
