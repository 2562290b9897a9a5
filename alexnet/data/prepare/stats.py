"""Training-set statistics, accumulated per shard and merged exactly.

Pixels are integers, so every sum is kept in integers (per-pixel sums of the mean image,
the 3x3 sums of products of RGB values): the totals do not depend on the order in which
shards are finished, on the number of workers or on a resume, and the merged statistics are
bit-identical however the run went. From the totals (``N`` images, ``M = N * size * size``
pixels):

* the mean image (``size x size x C``, C = 3, or 1 for ``--channels 1``; section 2 of the paper: "subtracting the mean activity
  over the training set from each pixel");
* per-channel mean and standard deviation (unbiased), 0-255 units;
* the 3x3 covariance of RGB pixel values and its eigenpairs in the convention of
  :func:`alexnet.data.presets.colour_eigen` (descending, columns, signs fixed), for PCA colour
  augmentation (section 4.1; RGB only: grey images have no colour to perturb). Units: 0-255
  pixel values (eigenvalues in squared 0-255 units).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alexnet.data.presets import colour_eigen


@dataclass
class PartialStats:
    """Integer sums over some images of one size."""

    size: int
    count: int = 0
    pixel_sum: np.ndarray = field(default=None)  # type: ignore[assignment]  # (S, S, C) int64
    products: np.ndarray = field(default=None)  # type: ignore[assignment]  # (C, C) int64: sum of x x^T
    channels: int = 3

    def __post_init__(self) -> None:
        if self.pixel_sum is None:
            self.pixel_sum = np.zeros((self.size, self.size, self.channels), np.int64)
        if self.products is None:
            self.products = np.zeros((self.channels, self.channels), np.int64)

    def add(self, pixels: np.ndarray) -> None:
        """Add one ``S,S,C`` uint8 image."""
        self.count += 1
        self.pixel_sum += pixels
        c = self.channels
        x = pixels.reshape(-1, c).T.astype(np.int32)  # products of two values <= 255 fit in int32
        for i in range(c):
            for j in range(i, c):
                v = int((x[i] * x[j]).sum(dtype=np.int64))
                self.products[i, j] += v
                if i != j:
                    self.products[j, i] += v

    def merge(self, other: PartialStats) -> None:
        self.count += other.count
        self.pixel_sum += other.pixel_sum
        self.products += other.products

    def arrays(self) -> dict[str, np.ndarray]:
        """For a shard's sidecar: the per-pixel sums fit uint32 (255 * 16.8M images)."""
        if self.count > np.iinfo(np.uint32).max // 255:
            raise ValueError("too many images in one shard for uint32 pixel sums")
        return {"stats_count": np.array(self.count, np.int64), "stats_pixel_sum": self.pixel_sum.astype(np.uint32),
                "stats_products": self.products}  # fmt: skip

    @classmethod
    def from_arrays(cls, size: int, arrays: dict[str, np.ndarray]) -> PartialStats:
        pixel_sum = arrays["stats_pixel_sum"].astype(np.int64)
        return cls(size, int(arrays["stats_count"]), pixel_sum, arrays["stats_products"].astype(np.int64),
                   pixel_sum.shape[2])  # fmt: skip


def finish(total: PartialStats) -> tuple[dict[str, object], np.ndarray] | None:
    """Manifest statistics and the float32 mean image of ``total`` (None without images)."""
    n = total.count
    if n == 0:
        return None
    m = n * total.size * total.size  # pixels
    c = total.channels
    sums = [int(v) for v in total.pixel_sum.sum(axis=(0, 1))]
    prods = [[int(v) for v in row] for row in total.products]
    mean = [s / m for s in sums]
    # Exact integer numerators: cov = (M * sum(xy) - sum(x) sum(y)) / (M (M - 1)).
    denom = m * (m - 1) if m > 1 else 1
    cov = np.array([[(m * prods[i][j] - sums[i] * sums[j]) / denom for j in range(c)] for i in range(c)])
    std = [float(np.sqrt(max(cov[i, i], 0.0))) for i in range(c)]
    mean_image = (total.pixel_sum / n).astype(np.float32)
    stats = {
        "images": n,
        "pixels": m,
        "units": "0-255 pixel values, " + ("RGB" if c == 3 else "grey"),
        "mean": mean,
        "std": std,
        "covariance": cov.tolist(),
    }
    if c == 3:
        values, vectors = colour_eigen(cov)
        stats |= {
            "eigenvalues": [float(v) for v in values],
            "eigenvectors": vectors.tolist(),
            "eigenvectors_layout": "columns: eigenvectors[c][k] is component c of eigenvector k",
        }
    stats["mean_image"] = "mean_image.npy"
    return stats, mean_image
