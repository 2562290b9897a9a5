"""Figure 3's numbers: how colour-specific the conv1 kernels of each tower are.

Section 6.1 observes that "the kernels on GPU 1 are largely color-agnostic, while the kernels
on GPU 2 are largely color-specific". To check that on any run we need one number per tower:

**Chroma energy share.** Split every RGB pixel ``w[:, y, x]`` of a kernel into its grey part
(the projection on ``(1, 1, 1) / sqrt(3)``, i.e. the mean over the three channels) and the rest,
its chroma. The kernel's chroma share is ``||w - mean_c w||^2 / ||w||^2``: 0 for a kernel that
is the same in R, G and B (it sees only luminance), 2/3 for a kernel living in one channel
only, 1 for a pure colour-opponent kernel (e.g. R = -G, B = 0). A tower's number is the mean
over its kernels. Grayscale models have no colour: the number is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Conv1Kernels:
    """The conv1 weights of a model split by tower (tower 1 first), as float32 ``K x C x h x w``."""

    towers: tuple[torch.Tensor, ...]

    @property
    def channels(self) -> int:
        return self.towers[0].shape[1]


def chroma_share(kernels: torch.Tensor) -> torch.Tensor:
    """Per-kernel share of energy outside the grey axis (see the module docstring), in [0, 1].

    ``kernels``: ``K x 3 x h x w``. A kernel of all zeros counts as grey (0).
    """
    if kernels.ndim != 4 or kernels.shape[1] != 3:
        raise ValueError(f"expected K x 3 x h x w RGB kernels, got shape {tuple(kernels.shape)}")
    w = kernels.double()
    chroma = w - w.mean(dim=1, keepdim=True)
    total = w.pow(2).sum(dim=(1, 2, 3))
    return torch.where(total > 0, chroma.pow(2).sum(dim=(1, 2, 3)) / total.clamp_min(1e-300), torch.zeros_like(total))


def colour_specificity(kernels: torch.Tensor) -> float | None:
    """The tower number: mean chroma share of ``kernels`` (``None`` for 1-channel kernels)."""
    if kernels.shape[1] != 3:
        return None
    return float(chroma_share(kernels).mean())


def conv1_kernels(model: nn.Module) -> Conv1Kernels:
    """conv1's kernels split into the paper's two towers (section 3.2: each GPU holds half the
    kernels of every layer; conv2 being grouped shows that conv1's halves feed separate towers).
    A single-tower model gives one tower."""
    layers = model.layers_by_role()  # type: ignore[operator]
    weight = layers["conv1"].weight.detach().float().cpu()
    groups = getattr(layers["conv2"], "groups", 1)
    return Conv1Kernels(tuple(weight.chunk(groups, dim=0)) if groups > 1 else (weight,))
