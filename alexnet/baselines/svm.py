"""One-vs-rest linear SVM (squared hinge, L2), fitted on rows streamed from an array or memory map.

The classifier of the 2010-2011 ImageNet systems (Perronnin et al. ECCV 2010; Sanchez &
Perronnin CVPR 2011: one-vs-rest linear SVMs on Fisher vectors). It minimises, for each class
c with labels y_ic = +1 for class c and -1 otherwise,

    l2 / 2 * |w_c|^2 + 1/N * sum_i max(0, 1 - y_ic (w_c . x_i + b_c))^2

(the L2-loss SVM, liblinear's default), all classes at once with L-BFGS. The objective is
smooth, so a quasi-Newton method converges in a few hundred passes, and each pass only reads
the features chunk by chunk: they can stay on disk in a ``numpy.memmap`` (ImageNet scale),
and memory holds one chunk plus the weights. Features are standardised (mean 0, variance 1
per dimension, measured in one streaming pass) and the scaling is folded into the saved
weights, so prediction is ``x @ W.T + b``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

CHUNK_ROWS = 8192
IN_MEMORY_BYTES = 2 * 2**30  # features up to this size are read into memory once
SMALL_PROBLEM = 2**26  # rows x dims x classes below which one thread is faster


@dataclass(frozen=True)
class SvmParams:
    """``l2``: weight decay of the objective above; ``max_iter``: L-BFGS iterations."""

    l2: float = 1e-4
    max_iter: int = 300
    tol: float = 1e-7


def _chunks(x: np.ndarray, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    in_memory = type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous
    for start in range(0, len(x), rows):
        part = x[start : start + rows]
        yield start, torch.from_numpy(part if in_memory else np.array(part, dtype=np.float32))


def feature_moments(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (1 where a feature is constant) per column, float64 sums."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for _, chunk in _chunks(x):
        c = chunk.double()
        total += c.sum(0)
        squares += (c * c).sum(0)
    mean = total / len(x)
    std = (squares / len(x) - mean * mean).clamp(min=0).sqrt()
    std[std < 1e-8] = 1.0
    return mean.float(), std.float()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch (and MKL) intra-op threads set to 1 for the block (process-wide), then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LinearSVM:
    """Fitted weights ``W`` (classes x D) and biases ``b``; scores are ``x @ W.T + b``."""

    def __init__(self, params: SvmParams = SvmParams()) -> None:
        self.params = params
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.iterations = 0

    def fit(self, x: np.ndarray, y: np.ndarray, num_classes: int, progress: bool = False) -> LinearSVM:
        """Fit on rows ``x`` (N x D float32 array or memmap) and labels ``y``.

        Memory: ``x`` is read into memory when it takes at most ``IN_MEMORY_BYTES``, else
        streamed from the (memory-mapped) array ``CHUNK_ROWS`` rows at a time in every pass.
        """
        n, d = x.shape
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
        mean, std = feature_moments(x)
        if x.nbytes <= IN_MEMORY_BYTES:
            x = np.array(x, dtype=np.float32)  # one read instead of one per pass
        # Optimise v = w / std and c = b + w . mean / std, i.e. the SVM on standardised features,
        # without standardising each chunk: z @ w.T + b = x @ v.T + (b - v @ mean).
        w = torch.zeros(num_classes, d, requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=self.params.max_iter, history_size=20,
                                tolerance_grad=self.params.tol, tolerance_change=1e-10,
                                line_search_fn="strong_wolfe")  # fmt: skip
        bar = tqdm(total=self.params.max_iter, desc="fitting linear SVM", unit="pass", disable=not progress, leave=False)
        classes = torch.arange(num_classes)

        def closure() -> torch.Tensor:
            with torch.no_grad():
                v = w / std
                c = b - v @ mean
                gv, gc = torch.zeros_like(w), torch.zeros_like(b)
                data = torch.zeros((), dtype=torch.float64)
                for start, chunk in _chunks(x):
                    yy = torch.where(labels[start : start + len(chunk), None] == classes, 1.0, -1.0)
                    margin = (1 - yy * torch.addmm(c, chunk, v.T)).clamp(min=0)
                    data += (margin * margin).sum(dtype=torch.float64)
                    ds = -2.0 / n * yy * margin
                    gv += ds.T @ chunk
                    gc += ds.sum(0)
                # chain rule back to (w, b): v = w / std, c = b - (w / std) @ mean
                w.grad = (gv - gc[:, None] * mean) / std + self.params.l2 * w
                b.grad = gc
                bar.update(1)
                return (data / n + 0.5 * self.params.l2 * (w * w).sum()).float()

        # Small problems are dominated by L-BFGS's many small ops, each of which starts a thread
        # team; on a loaded 2-core machine that made a 64-image fit 15x slower (110 s vs 7 s;
        # the per-thread OpenMP switch alone still left 29 s, MKL keeps its own threads). Large
        # ones are dominated by the chunk products, which threads speed up.
        small = n * d * num_classes < SMALL_PROBLEM
        with one_thread() if small else contextlib.nullcontext():
            opt.step(closure)
        bar.close()
        self.iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
        with torch.no_grad():  # fold the standardisation into the weights
            self.weight = (w / std).detach().clone()
            self.bias = (b - (w / std) @ mean).detach().clone()
        return self

    def decision_function(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scores (N x classes) of features ``x``."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("LinearSVM is not fitted")
        if isinstance(x, torch.Tensor):
            return x.float() @ self.weight.T + self.bias
        return torch.cat([chunk @ self.weight.T + self.bias for _, chunk in _chunks(x)]) if len(x) else \
            torch.zeros(0, len(self.bias))  # fmt: skip

    def predict(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class index of each row."""
        return self.decision_function(x).argmax(1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (saved in an ``.npz``, no pickle)."""
        assert self.weight is not None and self.bias is not None
        return {"weight": self.weight.numpy(), "bias": self.bias.numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: SvmParams = SvmParams()) -> LinearSVM:
        svm = cls(params)
        svm.weight = torch.from_numpy(np.array(arrays["weight"], dtype=np.float32))
        svm.bias = torch.from_numpy(np.array(arrays["bias"], dtype=np.float32))
        return svm
