"""Local response normalisation (AlexNet paper, section 3.3), made cheap.

    b[c] = a[c] / (k + alpha' * sum_{c' in window(c)} a[c']^2) ** beta

``alpha'`` depends on the convention:

* ``"code"`` (default): ``alpha' = alpha / size``, as in the authors' own cuda-convnet
  (``cmrnorm``), Caffe and ``torch.nn.LocalResponseNorm``;
* ``"paper"``: ``alpha' = alpha``, the formula as printed in the paper (with alpha = 1e-4 that
  is alpha = 5e-4 in PyTorch's terms).

Why not ``torch.nn.LocalResponseNorm``: it builds the channel window with ``avg_pool3d`` over a
padded copy of the squares, which on CPU costs more than all of AlexNet's convolutions together
(see ``alexnet bench train``). Here the window sum is ``size`` in-place shifted adds along the
channel axis, and the backward pass is written out by hand (one more window sum of the same
kind, because the window is its own adjoint up to a flip of the padding), so that a training
step needs about a dozen cheap element-wise passes and no 5-D pooling. Reduced-precision inputs
(bf16/fp16 under autocast) are normalised in float32 and returned in their own dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Convention = Literal["code", "paper"]


def channel_window_sum(
    t: torch.Tensor, before: int, after: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum of ``t`` over channels ``c - before .. c + after`` (zero outside), for every ``c``.

    Works on any memory format: only slices along dim 1 are used. ``out`` (same shape, not
    aliasing ``t``) receives the result, so that a caller can reuse a buffer it no longer needs:
    on CPU a fresh large tensor costs more in page faults than the adds themselves.
    """
    out = t.clone() if out is None else out.copy_(t)
    # Explicit add_ on the views: `out[:, d:] += ...` would also run a setitem copy.
    for d in range(1, before + 1):
        out[:, d:].add_(t[:, :-d])
    for d in range(1, after + 1):
        out[:, :-d].add_(t[:, d:])
    return out


class _LRNFunction(torch.autograd.Function):
    """Forward and hand-written backward; three fresh buffers forward, two backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float):  # type: ignore[override]
        in_dtype = x.dtype
        xf = x.float() if in_dtype in (torch.bfloat16, torch.float16) else x
        before, after = size // 2, (size - 1) // 2  # torch.nn.LocalResponseNorm's window
        squares = xf * xf
        den = channel_window_sum(squares, before, after).mul_(alpha_eff).add_(k)
        scale = torch.pow(den, -beta, out=squares)  # reuse the squares' buffer
        ctx.save_for_backward(xf, scale, den)
        ctx.params = (before, after, alpha_eff, beta, in_dtype)
        if in_dtype == xf.dtype:
            return xf * scale
        return torch.mul(xf, scale).to(in_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        xf, scale, den = ctx.saved_tensors
        before, after, alpha_eff, beta, in_dtype = ctx.params
        g = grad_out.to(xf.dtype)
        # d b_j / d a_i = [i == j] s_i - 2 alpha' beta a_i a_j s_j / den_j  (for i in window(j))
        t = (g * xf).mul_(scale).div_(den)
        # The adjoint of "sum over c-before..c+after" is "sum over c-after..c+before".
        back = channel_window_sum(t, after, before, out=torch.empty_like(t))
        # Written into t's buffer (the saved tensors must survive: backward may run twice).
        grad_in = torch.mul(g, scale, out=t).addcmul_(xf, back, value=-2.0 * alpha_eff * beta)
        return grad_in.to(in_dtype), None, None, None, None


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN with the paper's defaults (size 5, alpha 1e-4, beta 0.75, k 2).

    Args:
        size: number of adjacent channels summed over (``n`` in the paper).
        alpha: scaling constant.
        beta: exponent.
        k: additive constant.
        convention: ``"code"`` divides alpha by ``size`` (authors' code, Caffe, PyTorch);
            ``"paper"`` uses alpha as printed in the paper's equation.
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        convention: Convention = "code",
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        if convention not in ("code", "paper"):
            raise ValueError(f"LRN convention must be 'code' or 'paper', got {convention!r}")
        self.size, self.alpha, self.beta, self.k, self.convention = size, alpha, beta, k, convention

    @property
    def alpha_effective(self) -> float:
        """The coefficient that multiplies the window sum of squares."""
        return self.alpha / self.size if self.convention == "code" else self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha_effective, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, convention={self.convention!r}"


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
