"""Improved Fisher vectors of dense SIFT: the ILSVRC-2011 winner's image signature.

Perronnin, Sanchez & Mensink, "Improving the Fisher kernel for large-scale image classification"
(ECCV 2010), Sanchez & Perronnin (CVPR 2011), and the formulas of Sanchez, Perronnin, Mensink &
Verbeek, "Image classification with the Fisher vector: theory and practice" (IJCV 2013, eqs.
(16)-(17) and section 2.3):

1. local descriptors (:mod:`alexnet.baselines.sift`: dense RootSIFT at several scales; for colour
   images also local colour statistics, encoded separately and concatenated, the late fusion of
   the 2011 entry) are projected by PCA to ``pca_dims`` dimensions (decorrelated, so that a
   *diagonal* GMM fits them; IJCV 2013 section 3.2);
2. a diagonal-covariance GMM of ``components`` Gaussians (the visual vocabulary) is fitted by EM on
   a random sample of training descriptors (:func:`fit_gmm`);
3. for the ``T`` descriptors ``x_t`` of a region, with posteriors ``g_t(k)``, mixture weights
   ``w_k``, means ``mu_k`` and standard deviations ``sigma_k`` (all per dimension)::

       G_mu_k    = 1 / (T sqrt(w_k))   sum_t g_t(k) (x_t - mu_k) / sigma_k
       G_sigma_k = 1 / (T sqrt(2 w_k)) sum_t g_t(k) [(x_t - mu_k)^2 / sigma_k^2 - 1]

   (the gradient of the log-likelihood whitened by the diagonal Fisher information; the weight
   gradients add little and are left out, as in the papers), ``2 K D`` numbers;
4. "improved": power normalisation ``sign(z) sqrt|z|`` and L2 normalisation (ECCV 2010 section 3);
5. spatial pyramid: one FV for the whole image and one for each cell of a 2 x 2 grid (a
   descriptor belongs to the cell holding its centre), each region power- and L2-normalised, then
   scaled by ``1 / sqrt(regions)`` so the whole signature has unit norm (ECCV 2010 used 1x1 + 3x1
   on ImageNet; 2x2 suits centred objects such as Fashion-MNIST's and is the common choice of
   Chatfield et al. BMVC 2011).

Everything is batched tensor arithmetic over images (a loop only over the few regions); images
are processed in chunks so that the ``N x T x K`` posteriors stay under :data:`CHUNK_ELEMENTS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from alexnet.baselines.sift import COLOUR_DIM, SIFT_DIM, DsiftParams, colour_descriptors, dsift

# Floats per chunk of images in transform (descriptors T x 224 and posteriors T x K per image):
# 32 MiB bounds its memory, and chunks of ~200 small images stay in cache (1 thread, 28 px:
# 1,300 dense-SIFT images/s in chunks of 100-250, 370 in one chunk of 2,000).
CHUNK_ELEMENTS = 2**23
GRID = 2  # the pyramid: 1x1 + GRID x GRID
VAR_FLOOR = 1e-3  # GMM variances floored at this fraction of the data's variance (per dimension)


@dataclass
class Pca:
    """``x -> (x - mean) @ components.T``: the top ``dims`` principal directions."""

    mean: torch.Tensor
    components: torch.Tensor  # dims x D

    @classmethod
    def fit(cls, x: torch.Tensor, dims: int) -> Pca:
        """Principal directions of ``x`` (rows), by an eigendecomposition of the float64 covariance."""
        xd = x.double()
        mean = xd.mean(0)
        centred = xd - mean
        eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / max(1, len(x) - 1))
        order = eigvals.argsort(descending=True)[: min(dims, x.shape[1])]
        comps = eigvecs[:, order].T
        # A deterministic sign per direction (eigh's is arbitrary): largest entry positive.
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        return cls(mean.float(), (comps * signs).float())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components.T


@dataclass
class Gmm:
    """Diagonal-covariance Gaussian mixture: ``weights`` (K), ``means`` and ``variances`` (K x D)."""

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x | mu_k, diag(var_k))`` for rows ``x`` (``... x D`` -> ``... x K``)."""
        precision = 1.0 / self.variances
        # |x - mu|^2 / var expanded into matrix products: x^2 . p - 2 x . (mu p) + mu^2 . p
        quad = (x * x) @ precision.T - 2 * x @ (self.means * precision).T + (self.means**2 * precision).sum(1)
        log_norm = -0.5 * (self.variances.log().sum(1) + x.shape[-1] * math.log(2 * math.pi))
        return self.weights.log() + log_norm - 0.5 * quad

    def posteriors(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignments ``g(k)`` (``... x K``, rows sum to 1)."""
        return self.log_joint(x).softmax(-1)


def fit_gmm(x: torch.Tensor, components: int, iterations: int = 40, seed: int = 0, progress: bool = False) -> Gmm:
    """EM for a diagonal GMM on rows ``x`` (float32 posteriors, float64 sufficient statistics).

    Initialisation (seeded): means at ``components`` distinct random rows, every variance the data's,
    equal weights. Variances are floored at :data:`VAR_FLOOR` times the data's variance so that a
    component on identical points (e.g. the zero descriptors of flat patches) stays finite.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    k = min(components, n)
    data_var = x.double().var(0).clamp(min=1e-12)
    floor = (VAR_FLOOR * data_var).float()
    means = x[torch.randperm(n, generator=gen)[:k]].clone()
    gmm = Gmm(torch.full((k,), 1.0 / k), means, data_var.float().expand(k, -1).clone())
    chunk = max(1, CHUNK_ELEMENTS // (4 * k))
    for _ in tqdm(range(iterations), desc="fitting GMM (EM)", unit="iter", disable=not progress, leave=False):
        s0 = torch.zeros(k, dtype=torch.float64)
        s1 = torch.zeros(k, x.shape[1], dtype=torch.float64)
        s2 = torch.zeros(k, x.shape[1], dtype=torch.float64)
        for start in range(0, n, chunk):
            xc = x[start : start + chunk]
            g = gmm.posteriors(xc)
            s0 += g.sum(0).double()
            s1 += (g.T @ xc).double()
            s2 += (g.T @ (xc * xc)).double()
        s0c = s0.clamp(min=1e-10)[:, None]
        # A component that lost every point is restarted on a random row (k-means' empty-cluster fix).
        mean = s1 / s0c
        var = (s2 / s0c - mean * mean).float().clamp(min=0)
        mean = mean.float()
        empty = s0 < 1e-6
        if empty.any():
            mean[empty] = x[torch.randint(n, (int(empty.sum()),), generator=gen)]
            var[empty] = data_var.float()
        gmm = Gmm((s0 / s0.sum()).float().clamp(min=1e-8), mean, torch.maximum(var, floor))
    return gmm


def region_masks(centres: torch.Tensor, side: int, grid: int = GRID) -> torch.Tensor:
    """``R x T`` 0/1 membership of descriptors (centres ``T x 2``) in the pyramid's regions: the
    whole image, then the ``grid x grid`` cells in row-major order (a centre on a cell edge goes
    to the lower cell)."""
    cell = (centres / side * grid).floor().long().clamp(0, grid - 1)
    index = cell[:, 0] * grid + cell[:, 1]
    masks = [torch.ones(len(centres))] + [(index == r).float() for r in range(grid * grid)]
    return torch.stack(masks)


def fisher_vectors(x: torch.Tensor, gmm: Gmm, masks: torch.Tensor, improved: bool = True) -> torch.Tensor:
    """Improved Fisher vectors ``N x (R * 2KD)`` of descriptor sets ``x`` (``N x T x D``), one block
    per region of ``masks`` (``R x T``): per region ``[G_mu (K x D), G_sigma (K x D)]`` (module
    docstring), power-normalised, L2-normalised, times ``1/sqrt(R)``. A region without
    descriptors gets zeros. ``improved=False``: the raw ``[G_mu, G_sigma]`` blocks, no normalisation."""
    g = gmm.posteriors(x)  # N, T, K
    d = x.shape[-1]
    xx = torch.cat([x, x * x], dim=-1)  # the first and second moments in one product
    sigma = gmm.variances.sqrt()
    blocks = []
    for mask in masks:
        idx = mask.nonzero()[:, 0]
        count = max(1, len(idx))
        if len(idx) and int(idx[-1] - idx[0]) + 1 == len(idx):  # a contiguous range: a view, no copy
            gr, xr = g[:, int(idx[0]) : int(idx[-1]) + 1], xx[:, int(idx[0]) : int(idx[-1]) + 1]
        else:
            gr, xr = g[:, idx], xx[:, idx]
        s0 = gr.sum(1)[..., None]  # N, K, 1
        s12 = gr.transpose(1, 2) @ xr  # N, K, 2D
        s1, s2 = s12[..., :d], s12[..., d:]
        g_mu = (s1 - s0 * gmm.means) / (sigma * gmm.weights.sqrt()[:, None] * count)
        g_sigma = ((s2 - 2 * gmm.means * s1 + s0 * gmm.means**2) / gmm.variances - s0) / (
            math.sqrt(2) * gmm.weights.sqrt()[:, None] * count)  # fmt: skip
        fv = torch.cat([g_mu.flatten(1), g_sigma.flatten(1)], dim=1)
        if not improved:
            blocks.append(fv)
            continue
        fv = fv.sign() * fv.abs().sqrt()  # power normalisation (alpha = 1/2)
        blocks.append(fv / fv.norm(dim=1, keepdim=True).clamp(min=1e-12))
    return torch.cat(blocks, dim=1) / (math.sqrt(len(masks)) if improved else 1.0)


class _Stream:
    """One descriptor type (``sift`` or ``colour``) with its PCA and GMM."""

    def __init__(self, kind: str, pca: Pca, gmm: Gmm) -> None:
        self.kind, self.pca, self.gmm = kind, pca, gmm


class SiftFisher:
    """Dense (Root)SIFT [+ local colour statistics] -> PCA -> GMM -> improved FV with a spatial pyramid.

    ``fit`` samples :data:`FIT_DESCRIPTORS` descriptors of the given training images (seeded) for
    PCA and EM; ``transform`` maps uint8 ``N,C,S,S`` images to ``N x dim`` float32 signatures,
    ``(1 + GRID^2) * 2 * components * min(pca_dims, 128)`` dims per descriptor type (SIFT, and for
    colour images the colour statistics, ``pca_dims`` capped at 96 for them).
    """

    FIT_IMAGES = 2000  # training images whose descriptors are sampled for PCA and the GMM
    FIT_DESCRIPTORS = 200_000  # descriptors (of each type) for PCA and EM
    COMPONENTS = 32  # default GMM vocabulary (chosen on a held-out split: docs/RESULTS.md)
    PCA_DIMS = 32  # default descriptor dimensions after PCA

    def __init__(self, side: int, channels: int, components: int = COMPONENTS, pca_dims: int = PCA_DIMS, seed: int = 0,
                 colour: bool | None = None, params: DsiftParams | None = None) -> None:  # fmt: skip
        self.side, self.channels, self.components, self.pca_dims, self.seed = side, channels, components, pca_dims, seed
        self.colour = channels == 3 if colour is None else colour
        self.params = params or DsiftParams.for_side(side)
        self.streams: list[_Stream] = []
        masks = region_masks(self.params.centres(side), side)
        # Descriptors reordered cell by cell, so that each region is a contiguous range (a view).
        self.order = masks[1:].argmax(0).argsort(stable=True)
        self.masks = masks[:, self.order]

    def _descriptors(self, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        out = [("sift", dsift(images, self.params)[:, self.order])]
        if self.colour:
            out.append(("colour", colour_descriptors(images, self.params)[:, self.order]))
        return out

    def fit(self, images: torch.Tensor, progress: bool = False) -> SiftFisher:
        gen = torch.Generator().manual_seed(self.seed)
        samples: dict[str, list[torch.Tensor]] = {}
        per_image = max(1, self.FIT_DESCRIPTORS // max(1, len(images)))
        chunk = max(1, CHUNK_ELEMENTS // (self.masks.shape[1] * (SIFT_DIM + COLOUR_DIM)))
        for start in range(0, len(images), chunk):
            for kind, d in self._descriptors(images[start : start + chunk]):
                # the same random positions for the images of one chunk, other ones for each chunk
                # (what the measured Fashion-MNIST runs used; a per-image draw would be equally valid)
                pick = torch.randperm(d.shape[1], generator=gen)[: min(per_image, d.shape[1])]
                samples.setdefault(kind, []).append(d[:, pick].reshape(-1, d.shape[-1]))
        self.streams = []
        for kind, parts in samples.items():
            x = torch.cat(parts)
            pca = Pca.fit(x, self.pca_dims)
            self.streams.append(_Stream(kind, pca, fit_gmm(pca(x), self.components, seed=self.seed, progress=progress)))
        return self

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        assert self.streams, "fit first"
        # Chunks bound the descriptors (T x 224 floats per image) and posteriors (T x K) in memory.
        t = self.masks.shape[1]
        chunk = max(1, CHUNK_ELEMENTS // (t * max(self.components, SIFT_DIM + COLOUR_DIM)))
        out = []
        for start in range(0, len(images), chunk):
            parts = dict(self._descriptors(images[start : start + chunk]))
            fvs = [fisher_vectors(s.pca(parts[s.kind]), s.gmm, self.masks) for s in self.streams]
            # Each descriptor type is unit norm; their concatenation scaled back to unit norm.
            out.append(torch.cat(fvs, dim=1) / math.sqrt(len(fvs)))
        return torch.cat(out)

    def config(self) -> dict[str, Any]:
        return {
            "side": self.side, "channels": self.channels, "components": self.components, "pca_dims": self.pca_dims,
            "seed": self.seed, "colour": self.colour,
            "dsift": {"bins": list(self.params.bins), "step": self.params.step, "root": self.params.root},
            "streams": [s.kind for s in self.streams], "grid": GRID,
        }  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for s in self.streams:
            out.update({
                f"{s.kind}_pca_mean": s.pca.mean.numpy(), f"{s.kind}_pca_components": s.pca.components.numpy(),
                f"{s.kind}_gmm_weights": s.gmm.weights.numpy(), f"{s.kind}_gmm_means": s.gmm.means.numpy(),
                f"{s.kind}_gmm_variances": s.gmm.variances.numpy(),
            })  # fmt: skip
        return out

    @classmethod
    def load(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> SiftFisher:
        d = config["dsift"]
        m = cls(config["side"], config["channels"], config["components"], config["pca_dims"], config["seed"],
                config["colour"], DsiftParams(tuple(d["bins"]), d["step"], d["root"]))  # fmt: skip

        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[name], dtype=np.float32))

        m.streams = [
            _Stream(k, Pca(t(f"{k}_pca_mean"), t(f"{k}_pca_components")),
                    Gmm(t(f"{k}_gmm_weights"), t(f"{k}_gmm_means"), t(f"{k}_gmm_variances")))
            for k in config["streams"]
        ]  # fmt: skip
        return m
