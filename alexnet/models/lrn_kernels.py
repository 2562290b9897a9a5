"""The blocked LRN kernels (section 3.3's normalisation made cheap on CPU) and the
``torch.library`` custom op ``alexnet::lrn`` built on them; :mod:`alexnet.models.lrn` chooses
between them and the fused CUDA path.

They work on cache-resident float32 blocks (input read once, output written once), sum the
window by doubling, compute ``den ** -0.75`` from two ``rsqrt`` and recompute the denominator in
the backward pass instead of saving it. The measurements behind each choice are in
docs/design.md ("LRN made cheap").
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

# Elements per block (see the module docstring): ~1 MiB float32 buffers stay in cache on CPU.
# On CUDA blocks only bound the scratch memory; big blocks keep the kernel count low.
CPU_BLOCK_ELEMENTS = 1 << 18
CUDA_BLOCK_ELEMENTS = 1 << 24
# Workspaces (6 buffers of ~1 MiB each) kept per thread on CPU: a few layers x (training,
# validation and last partial batch) geometries.
CPU_CACHED_WORKSPACES = 8


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is stored NHWC (and not also plainly contiguous, as with C == 1)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _channel_view(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` as a (outer, C, inner) view in which dim 1 is the channel axis, without copying.

    NCHW -> (N, C, H*W); NHWC -> (N*H*W, C, 1), so that blocks along dim 0 are contiguous.
    """
    if channels_last:
        n, c, h, w = t.shape
        return t.permute(0, 2, 3, 1).view(n * h * w, c).unsqueeze(2)
    return t.view(t.shape[0], t.shape[1], math.prod(t.shape[2:]))


def _neg_pow(den: torch.Tensor, beta: float, out: torch.Tensor) -> torch.Tensor:
    """``den ** -beta`` into ``out``, without ``torch.pow`` for the paper's beta (see top)."""
    if beta == 0.75:
        return torch.rsqrt(den, out=out).rsqrt_().div_(den)
    if beta == 0.5:
        return torch.rsqrt(den, out=out)
    if beta == 1.0:
        return torch.reciprocal(den, out=out)
    return torch.pow(den, -beta, out=out)


def _window_ops(
    src: torch.Tensor, out: torch.Tensor, size: int, step: int, length: int, w2: torch.Tensor, w4: torch.Tensor
) -> list[Callable[[], object]]:
    """Calls that set ``out[p] = sum_{j < size} src[p + j * step]`` for ``p < length``.

    All 1-D. Partial sums of widths 2 and 4 go to ``w2``/``w4`` (doubling), and the window is
    assembled from the widest pieces: 3 adds for size 5, 4 for size 9, instead of size - 1.
    ``out`` must not overlap ``src``, ``w2`` or ``w4``.
    """
    ops: list[Callable[[], object]] = []
    pieces = {1: src}
    if size >= 2:
        n = length + (size - 2) * step
        ops.append(functools.partial(torch.add, src[:n], src[step : step + n], out=w2[:n]))
        pieces[2] = w2
    if size >= 4:
        n = length + (size - 4) * step
        ops.append(functools.partial(torch.add, w2[:n], w2[2 * step : 2 * step + n], out=w4[:n]))
        pieces[4] = w4
    terms, offset, left = [], 0, size
    for width in (4, 2, 1):
        while width in pieces and left >= width:
            terms.append(pieces[width][offset : offset + length])
            offset, left = offset + width * step, left - width
    dst = out[:length]
    if len(terms) == 1:
        ops.append(functools.partial(dst.copy_, terms[0]))
        return ops
    ops.append(functools.partial(torch.add, terms[0], terms[1], out=dst))
    ops.extend(functools.partial(dst.add_, t) for t in terms[2:])
    return ops


class _Block:
    """Views into the padded scratch buffers for one block shape (``rows`` x C x ``inner``).

    Flat layout of each buffer: ``P`` padding channels, then per row ``C`` data channels
    followed by ``P`` padding channels, each channel ``inner`` contiguous elements. Position
    ``q`` of the denominator buffer ``D`` is the denominator of position ``q`` of ``A``.
    """

    def __init__(self, bufs: list[torch.Tensor], rows: int, channels: int, inner: int, size: int) -> None:
        before, after = size // 2, (size - 1) // 2
        pad = max(before, after)
        total = (pad + rows * (channels + pad)) * inner
        length = total - (size - 1) * inner  # window sums that stay inside the buffer
        self.A, self.B, self.W2, self.W4, self.D, self.G = (b[:total] for b in bufs)
        self.squares = self.B  # k/size + alpha' a^2, over the whole block, padding included

        def data(flat: torch.Tensor) -> torch.Tensor:
            return flat[pad * inner :].view(rows, channels + pad, inner)[:, :channels]

        self.a, self.g = data(self.A), data(self.G)
        # Denominator d[q] = window_sum(squares)[q - before * inner], so written at an offset.
        fwd = slice(before * inner, before * inner + length)
        self.den_ops = _window_ops(self.B, self.D[fwd.start :], size, inner, length, self.W2, self.W4)
        self.d, self.s, self.a_r, self.g_r = self.D[fwd], self.W2[fwd], self.A[fwd], self.G[fwd]
        self.scale = data(self.W2)
        # Backward: t (in B) is computed on `fwd`, and its padding must be exactly zero (it
        # holds k/size, or garbage where the products ran over padding): zeroed explicitly,
        # which also keeps a NaN/inf in one image from leaking into its neighbours' gradients.
        self.t = self.B[fwd]
        self.t_pads = (self.B[: pad * inner], self.B[pad * inner :].view(rows, channels + pad, inner)[:, channels:])
        # Adjoint window: channels c - after .. c + before, i.e. the sum read `after` back.
        self.back_ops = _window_ops(self.B, self.D[after * inner :], size, inner, length, self.G, self.W4)
        self.u, self.w = data(self.W2), data(self.D)


def _block_elements(device: torch.device) -> int:
    return CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Layout:
    """How an (outer, C, inner) view is cut into blocks of at most ``block_elements``.

    Whole rows when a row fits (all of NHWC, small NCHW maps), in equal blocks; otherwise each
    row's inner (spatial) extent in equal pieces.
    """

    def __init__(self, x3: torch.Tensor, size: int) -> None:
        outer, self.channels, inner = x3.shape
        self.size, self.dtype, self.device = size, _compute_dtype(x3.dtype), x3.device
        self.pad = max(size // 2, (size - 1) // 2)
        block_elements, row = _block_elements(x3.device), self.channels * inner
        if x3.numel() == 0:
            self.rows, self.piece, self.blocks = 1, 1, []
            return
        if row <= block_elements:
            self.rows = math.ceil(outer / math.ceil(outer / max(1, block_elements // row)))
            self.piece = inner
        else:
            self.rows, self.piece = 1, math.ceil(inner / math.ceil(row / block_elements))
        self.blocks = [
            (slice(r, min(outer, r + self.rows)), slice(i, min(inner, i + self.piece)))
            for r in range(0, outer, self.rows)
            for i in range(0, inner, self.piece)
        ]


class _Workspace:
    """One worker's scratch buffers for a layout, and the block views into them."""

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        n = (layout.pad + layout.rows * (layout.channels + layout.pad)) * layout.piece
        # Zeroed because A's padding must be 0 (nothing writes it later). The other buffers'
        # padding positions take part in the flat passes, but those results are never read
        # (see _workspace), so what they hold, stale values included, does not matter.
        # Normal tensors even when first made under torch.inference_mode (serving, eval): an
        # inference tensor could not be written in place by a later call outside that mode.
        with torch.inference_mode(False):
            self.bufs = [torch.zeros(n, dtype=layout.dtype, device=layout.device) for _ in range(6)]
        self.views: dict[tuple[int, int], _Block] = {}
        self.inner = layout.piece

    def block(self, rows: slice, cols: slice) -> _Block:
        """Views for the block ``rows`` x C x ``cols``."""
        m, i = rows.stop - rows.start, cols.stop - cols.start
        if i != self.inner:  # a new flat layout: old data would sit where this one has padding
            self.bufs[0].zero_()
            self.inner = i
        if (m, i) not in self.views:
            self.views[(m, i)] = _Block(self.bufs, m, self.layout.channels, i, self.layout.size)
        return self.views[(m, i)]


_CACHE = threading.local()


def _workspace(layout: _Layout) -> _Workspace:
    """A workspace for ``layout``: on CPU the calling thread's cached one for the same block
    geometry (LRU of :data:`CPU_CACHED_WORKSPACES`), elsewhere a new one.

    Reuse skips allocating and zeroing six ~1 MiB buffers per call (small net, batch 128:
    ~1.7 ms of memset per training step) and rebuilding the block views. It is safe because a
    workspace's buffers only ever hold this geometry's data: A's padding stays zero, and every
    value a block reads it has written itself in the same call (stale values sit only where
    results are never read, or in the backward's padding, which is zeroed per block).
    """
    if layout.device.type != "cpu":
        return _Workspace(layout)
    cache: OrderedDict[tuple[object, ...], _Workspace] = _CACHE.__dict__.setdefault("workspaces", OrderedDict())
    key = (layout.channels, layout.rows, layout.piece, layout.size, layout.dtype)
    ws = cache.pop(key, None) or _Workspace(layout)
    cache[key] = ws
    while len(cache) > CPU_CACHED_WORKSPACES:
        cache.popitem(last=False)
    return ws


def _for_each_block(layout: _Layout, work: Callable[[_Workspace, slice, slice], None]) -> None:
    """Call ``work(workspace, rows, cols)`` for every block, one after the other.

    Each block's ops use torch's intra-op threads: a pool of threads taking whole blocks was
    slower inside a real training step (docs/design.md, "LRN made cheap").
    """
    ws = _workspace(layout)
    for rows, cols in layout.blocks:
        work(ws, rows, cols)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the blocked kernels read ``x`` in, and write their result in."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def blocked_forward(x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float) -> torch.Tensor:
    """The blocked LRN forward (see the module docstring); any device, no autograd."""
    fmt = _memory_format(x)
    channels_last = fmt is torch.channels_last
    x = x.contiguous(memory_format=fmt)
    y = torch.empty_like(x, memory_format=fmt)
    x3, y3 = _channel_view(x, channels_last), _channel_view(y, channels_last)
    layout = _Layout(x3, size)
    k_share = torch.full((), k / size, dtype=layout.dtype, device=x.device)  # no host sync on CUDA

    def work(ws: _Workspace, rows: slice, cols: slice) -> None:
        v = ws.block(rows, cols)
        v.a.copy_(x3[rows, :, cols])
        torch.addcmul(k_share, v.A, v.A, value=alpha_eff, out=v.squares)
        for op in v.den_ops:
            op()
        _neg_pow(v.d, beta, out=v.s)
        torch.mul(v.a, v.scale, out=y3[rows, :, cols])

    _for_each_block(layout, work)
    return y


def blocked_backward(x: torch.Tensor, grad_out: torch.Tensor, size: int, alpha_eff: float, beta: float,
                     k: float) -> torch.Tensor:  # fmt: skip
    """The gradient of :func:`blocked_forward` with respect to ``x``, recomputing the denominator."""
    fmt = _memory_format(x)
    channels_last = fmt is torch.channels_last
    x = x.contiguous(memory_format=fmt)
    g = grad_out.contiguous(memory_format=fmt)
    grad_in = torch.empty_like(x, memory_format=fmt)
    x3, g3, gi3 = (_channel_view(t, channels_last) for t in (x, g, grad_in))
    layout = _Layout(x3, size)
    k_share = torch.full((), k / size, dtype=layout.dtype, device=x.device)  # no host sync on CUDA
    # b_j = a_j s_j, s_j = d_j^-beta, d_j = k + alpha' sum_{i in win(j)} a_i^2, so
    # dL/da_i = g_i s_i - 2 alpha' beta a_i sum_{j: i in win(j)} g_j a_j s_j / d_j.
    coef = -2.0 * alpha_eff * beta

    def work(ws: _Workspace, rows: slice, cols: slice) -> None:
        v = ws.block(rows, cols)
        v.a.copy_(x3[rows, :, cols])
        v.g.copy_(g3[rows, :, cols])
        torch.addcmul(k_share, v.A, v.A, value=alpha_eff, out=v.squares)
        for op in v.den_ops:
            op()
        u = _neg_pow(v.d, beta, out=v.s).mul_(v.g_r)  # g s (G is free after this)
        torch.mul(u, v.a_r, out=v.t).div_(v.d)  # g a s / d, in the squares' buffer
        for pad in v.t_pads:
            pad.zero_()
        for op in v.back_ops:
            op()
        torch.addcmul(v.u, v.a, v.w, value=coef, out=gi3[rows, :, cols])

    _for_each_block(layout, work)
    return grad_in


# --------------------------------------------------------------------------------------------
# The blocked kernels as a torch.library custom op: Dynamo/AOTAutograd see an opaque op with a
# fake (shape-only) implementation and a registered backward, so `torch.compile` traces a
# model through it (the autograd.Function below could not be traced: Dynamo's fake-tensor pass
# stopped at the views the blocks build into real storage).


@torch.library.custom_op("alexnet::lrn", mutates_args=())
def lrn_op(x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float) -> torch.Tensor:
    """LRN forward with the blocked kernels; differentiable (see :func:`lrn_backward_op`)."""
    return blocked_forward(x, size, alpha_eff, beta, k)


@lrn_op.register_fake
def _lrn_fake(x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float) -> torch.Tensor:
    return torch.empty_like(x, memory_format=_memory_format(x))


@torch.library.custom_op("alexnet::lrn_backward", mutates_args=())
def lrn_backward_op(x: torch.Tensor, grad_out: torch.Tensor, size: int, alpha_eff: float, beta: float,
                    k: float) -> torch.Tensor:  # fmt: skip
    """The gradient of :func:`lrn_op` with respect to its input (first derivative only)."""
    return blocked_backward(x, grad_out, size, alpha_eff, beta, k)


@lrn_backward_op.register_fake
def _lrn_backward_fake(x: torch.Tensor, grad_out: torch.Tensor, size: int, alpha_eff: float, beta: float,
                       k: float) -> torch.Tensor:  # fmt: skip
    return torch.empty_like(x, memory_format=_memory_format(x))


def _lrn_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    # Only the input is saved: it is the ReLU's output, which autograd keeps anyway.
    ctx.save_for_backward(inputs[0])
    ctx.params = inputs[1:]


def _lrn_backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    (x,) = ctx.saved_tensors
    return lrn_backward_op(x, grad_out, *ctx.params), None, None, None, None


lrn_op.register_autograd(_lrn_backward, setup_context=_lrn_setup_context)


class LRNFunction(torch.autograd.Function):
    """The same kernels as a plain autograd.Function: the implementation before the custom op,
    kept as ``impl="function"`` so that ``alexnet bench train`` measures both in one run."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha_eff: float, beta: float, k: float):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.params = (size, alpha_eff, beta, k)
        return blocked_forward(x, size, alpha_eff, beta, k)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return blocked_backward(x, grad_out, *ctx.params), None, None, None, None
