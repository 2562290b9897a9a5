"""Feature extractors (fit/transform estimators on uint8 ``N,C,H,W`` image batches).

Each extractor turns images into fixed-length float32 vectors for the linear classifier
(:mod:`alexnet.baselines.svm`) and saves its fitted state as plain arrays and JSON (no
pickle): ``config()`` (JSON), ``arrays()`` (``.npz``), and ``load(config, arrays)``.

* :class:`Pixels`: the raw pixels, the floor that shows what features buy.
* :class:`Hog`: HOG (Dalal & Triggs 2005) at one or more cell sizes, side by side
  (a coarse-to-fine pyramid of cells, as in the pyramid-HOG descriptors of 2007-2011).
* :class:`RbfNystroem`: an explicit map of a Gaussian kernel on other features (Nystroem:
  Williams & Seeger 2001), so a *linear* SVM on it approximates a kernel SVM; explicit
  kernel maps in front of linear SVMs are how the 2010-2011 large-scale systems got kernel
  accuracy at linear cost (Vedaldi & Zisserman, "Efficient additive kernels via explicit
  feature maps", CVPR 2010; Perronnin, Sanchez & Liu, CVPR 2010).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from alexnet.baselines.hog import HogParams, gradients, hog


class Extractor(Protocol):
    """What every feature extractor provides."""

    def fit(self, images: torch.Tensor) -> Extractor: ...

    def transform(self, images: torch.Tensor) -> torch.Tensor: ...

    def config(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


class Pixels:
    """Pixel values in [0, 1], flattened."""

    def fit(self, images: torch.Tensor) -> Pixels:
        return self

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1).float() / 255.0

    def config(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def load(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Pixels:
        return cls()


class Hog:
    """HOG at each of ``params`` (cell sizes), concatenated; optionally the pixels too.

    With ``balance``, each part is L2-normalised per image so that each scale (and the pixels)
    weighs the same in a Euclidean kernel on top.
    """

    def __init__(self, params: tuple[HogParams, ...], pixels: bool = False, balance: bool = False) -> None:
        self.params, self.pixels, self.balance = params, pixels, balance

    def fit(self, images: torch.Tensor) -> Hog:
        return self

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        grads = gradients(images)  # shared by the cell sizes
        parts = [hog(images, p, grads) for p in self.params]
        if self.pixels:
            parts.append(Pixels().transform(images))
        if self.balance:
            parts = [p / p.norm(dim=1, keepdim=True).clamp(min=1e-6) for p in parts]
        return torch.cat(parts, dim=1)

    def config(self) -> dict[str, Any]:
        return {
            "hog": [{"orientations": p.orientations, "cell": p.cell, "block": p.block} for p in self.params],
            "pixels": self.pixels, "balance": self.balance,
        }  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def load(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Hog:
        return cls(tuple(HogParams(**p) for p in config["hog"]), config["pixels"], config["balance"])


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T).clamp(min=0)


class RbfNystroem:
    """exp(-gamma |x - y|^2) mapped explicitly with ``landmarks`` training points (Nystroem).

    ``gamma`` is set from the data: 1 / median squared distance between sample points (the
    median heuristic), so nothing has to be tuned per dataset. The map is
    ``phi(x) = k(x, L) K_LL^{-1/2}``, so ``phi(x) . phi(y)`` approximates ``k(x, y)``.
    """

    def __init__(self, base: Hog | Pixels, landmarks: int = 2000, seed: int = 0) -> None:
        self.base, self.landmarks, self.seed = base, landmarks, seed
        self.points: torch.Tensor | None = None
        self.projection: torch.Tensor | None = None
        self.gamma = 0.0

    def fit(self, images: torch.Tensor) -> RbfNystroem:
        gen = torch.Generator().manual_seed(self.seed)
        pick = torch.randperm(len(images), generator=gen)[: self.landmarks]
        points = self.base.transform(images[pick]).double()
        d2 = _sq_dist(points, points)
        off_diagonal = d2[~torch.eye(len(points), dtype=torch.bool)]
        self.gamma = float(1.0 / off_diagonal.median().clamp(min=1e-12))
        eigvals, eigvecs = torch.linalg.eigh(torch.exp(-self.gamma * d2))
        keep = eigvals > eigvals.max() * 1e-8  # drop the numerically null directions
        self.projection = (eigvecs[:, keep] / eigvals[keep].sqrt()).float()
        self.points = points.float()
        return self

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        assert self.points is not None and self.projection is not None, "fit first"
        x = self.base.transform(images)
        return torch.exp(-self.gamma * _sq_dist(x, self.points)) @ self.projection

    def config(self) -> dict[str, Any]:
        return {"base": self.base.config(), "landmarks": self.landmarks, "seed": self.seed, "gamma": self.gamma}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.points is not None and self.projection is not None
        return {"points": self.points.numpy(), "projection": self.projection.numpy()}

    @classmethod
    def load(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> RbfNystroem:
        base = Hog.load(config["base"], {})
        m = cls(base, config["landmarks"], config["seed"])
        m.gamma = float(config["gamma"])
        m.points = torch.from_numpy(np.array(arrays["points"], dtype=np.float32))
        m.projection = torch.from_numpy(np.array(arrays["projection"], dtype=np.float32))
        return m
