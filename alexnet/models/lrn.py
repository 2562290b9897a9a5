"""Local response normalisation (AlexNet paper, section 3.3), made cheap on CPU.

    b[c] = a[c] / (k + alpha' * sum_{c' in window(c)} a[c']^2) ** beta

``alpha'`` depends on the convention:

* ``"code"`` (default): ``alpha' = alpha / size``, as in the authors' own cuda-convnet
  (``cmrnorm``), Caffe and ``torch.nn.LocalResponseNorm``;
* ``"paper"``: ``alpha' = alpha``, the formula as printed in the paper (with alpha = 1e-4 that
  is alpha = 5e-4 in PyTorch's terms).

The window is ``torch.nn.LocalResponseNorm``'s: channels ``c - size // 2 .. c + (size - 1) // 2``.

Why not ``torch.nn.LocalResponseNorm``: it builds the window with ``avg_pool3d`` over a padded
copy of the squares, which on CPU costs more than all of AlexNet's convolutions together and
has no bf16 kernel. On CPU this one runs blocked kernels on cache-resident float32 blocks, as the
``torch.library`` custom op ``alexnet::lrn`` (:mod:`alexnet.models.lrn_kernels`; ``torch.compile``
traces through it); on CUDA :func:`fused_lrn` is the formula as plain ops for Inductor to fuse.
The measurements behind each choice are in docs/design.md ("LRN made cheap").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.models.lrn_kernels import LRNFunction, is_channels_last, lrn_op

Convention = Literal["code", "paper"]

def channel_window_sum(t: torch.Tensor, before: int, after: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of ``t`` over channels ``c - before .. c + after`` (zero outside), for every ``c``.

    Works on any memory format: only slices along dim 1 are used. ``out`` (same shape, not
    aliasing ``t``) receives the result. A plain helper, not the fast path of
    :class:`LocalResponseNorm` (which works on padded blocks).
    """
    out = t.clone() if out is None else out.copy_(t)
    # Explicit add_ on the views: `out[:, d:] += ...` would also run a setitem copy.
    for d in range(1, before + 1):
        out[:, d:].add_(t[:, :-d])
    for d in range(1, after + 1):
        out[:, :-d].add_(t[:, d:])
    return out



def fused_lrn(x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float) -> torch.Tensor:
    """LRN written as plain differentiable torch ops, for Inductor to fuse (CUDA path).

    Under ``torch.compile`` the squares, the padded window sum (``size`` shifted slices), the
    power and the product are all point-wise with fixed channel offsets: Inductor emits one
    kernel for the forward and one for the backward (autograd's formula, also point-wise).
    float32 inside for the reason the blocked path gives (the ``alpha'`` term is below bf16
    resolution near ``k``).
    """
    xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    before, after = size // 2, (size - 1) // 2
    # Pad dim 1 (channels): F.pad lists (last dim first) pairs for dims -1 .. 1.
    squares = F.pad(xf * xf, [0, 0] * (xf.dim() - 2) + [before, after])
    channels = xf.shape[1]
    window = squares.narrow(1, 0, channels)
    for d in range(1, size):
        window = window + squares.narrow(1, d, channels)
    y = xf * (k + alpha_eff * window).pow(-beta)
    return y.to(x.dtype)


@functools.cache
def _compiled_fused_lrn() -> Callable[..., torch.Tensor]:
    """:func:`fused_lrn` compiled on its own: the fused kernels in an eager (uncompiled) model."""
    return torch.compile(fused_lrn, fullgraph=True)


Impl = Literal["auto", "blocked", "function", "fused", "compiled"]
IMPLS: tuple[str, ...] = ("auto", "blocked", "function", "fused", "compiled")


def grouped_lrn(x: torch.Tensor, groups: int, size: int, alpha_eff: float, beta: float, k: float,
                impl: Impl = "auto") -> torch.Tensor:  # fmt: skip
    """:func:`lrn` within each of ``groups`` equal channel groups: no window crosses a group's edge.

    The paper's two GPUs each normalised across their own kernel maps only (sections 3.2-3.3);
    ``groups=2`` is that for the grouped two-tower net. The groups become batch rows of a view,
    so nothing is copied for contiguous NCHW or NHWC input and every implementation serves:
    NCHW ``(N, C, *)`` -> ``(N*G, C/G, *)``; NHWC ``(N, C, H, W)`` -> ``(N*H*W*G, C/G, 1, 1)``
    (the rows the blocked kernels cut an NHWC tensor into anyway), and the result is put back
    in the input's memory format.
    """
    if groups == 1:
        return lrn(x, size, alpha_eff, beta, k, impl)
    n, c = x.shape[0], x.shape[1]
    if c % groups:
        raise ValueError(f"LRN groups {groups} do not divide {c} channels")
    if is_channels_last(x):
        _, _, h, w = x.shape
        y = lrn(x.permute(0, 2, 3, 1).reshape(n * h * w * groups, c // groups, 1, 1), size, alpha_eff, beta, k, impl)
        return y.view(n, h, w, c).permute(0, 3, 1, 2)
    y = lrn(x.reshape(n * groups, c // groups, *x.shape[2:]), size, alpha_eff, beta, k, impl)
    return y.view(x.shape)


def lrn(x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float, impl: Impl = "auto") -> torch.Tensor:
    """LRN of ``x`` by ``impl``:

    * ``blocked``: the custom op ``alexnet::lrn`` (blocked kernels; traceable by ``torch.compile``);
    * ``function``: the same kernels as an autograd.Function (the former path; not traceable);
    * ``fused``: :func:`fused_lrn`, plain torch ops (Inductor fuses them when the model is compiled);
    * ``compiled``: :func:`fused_lrn` compiled on its own (when the model is not), else ``fused``;
    * ``auto``: ``blocked`` on CPU, ``compiled`` on other devices (CUDA).
    """
    if impl == "auto":
        impl = "blocked" if x.device.type == "cpu" else "compiled"
    if impl == "blocked":
        return lrn_op(x, size, alpha_eff, beta, k)
    if impl == "function":
        return LRNFunction.apply(x, size, alpha_eff, beta, k)
    if impl == "compiled" and not torch.compiler.is_compiling():
        return _compiled_fused_lrn()(x, size, alpha_eff, beta, k)
    return fused_lrn(x, size, alpha_eff, beta, k)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN with the paper's defaults (size 5, alpha 1e-4, beta 0.75, k 2).

    Args:
        size: number of adjacent channels summed over (``n`` in the paper).
        alpha: scaling constant.
        beta: exponent.
        k: additive constant.
        convention: ``"code"`` divides alpha by ``size`` (authors' code, Caffe, PyTorch);
            ``"paper"`` uses alpha as printed in the paper's equation.
        impl: which implementation runs (see :func:`lrn`); ``auto`` picks by device.
        groups: normalise within each of ``groups`` equal channel groups (see :func:`grouped_lrn`;
            2 = per tower, as on the paper's two GPUs); 1 = across all channels (Caffe, PyTorch).

    Input: (N, C, *) in any memory format and floating dtype; the output has the input's
    shape, dtype and (for 4-D NCHW/NHWC) memory format.
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        convention: Convention = "code",
        impl: Impl = "auto",
        groups: int = 1,
    ) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"LRN groups must be >= 1, got {groups}")
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        if convention not in ("code", "paper"):
            raise ValueError(f"LRN convention must be 'code' or 'paper', got {convention!r}")
        if impl not in IMPLS:
            raise ValueError(f"LRN impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        self.size, self.alpha, self.beta, self.k, self.convention = size, alpha, beta, k, convention
        self.impl, self.groups = impl, groups

    @property
    def alpha_effective(self) -> float:
        """The coefficient that multiplies the window sum of squares."""
        return self.alpha / self.size if self.convention == "code" else self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"LRN expects (N, C, ...) input, got shape {tuple(x.shape)}")
        return grouped_lrn(x, self.groups, self.size, self.alpha_effective, self.beta, self.k, self.impl)

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, convention={self.convention!r}{groups}"


def reference_lrn(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, convention: Convention = "code"
) -> torch.Tensor:
    """The formula written out directly, loop over channels (for tests; slow)."""
    alpha_eff = alpha / size if convention == "code" else alpha
    channels = x.shape[1]
    out = torch.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + (size - 1) // 2)
        den = k + alpha_eff * (x[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, c] = x[:, c] / den**beta
    return out
