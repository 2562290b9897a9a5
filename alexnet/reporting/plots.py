"""matplotlib charts as PNG bytes. Uses ``matplotlib.figure.Figure`` directly (no pyplot): no
global state, no GUI backend, nothing left open."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from alexnet.errors import UserError

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError:  # an optional dependency: the `report` extra
    raise UserError("alexnet report draws with matplotlib: pip install 'alexnet[report]' (or pip install matplotlib)") from None

DPI = 100
CORRECT, OTHER = "#2a9d3f", "#8a96a8"


def to_png(fig: Figure) -> bytes:
    """The figure rendered as PNG."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def curves(history: Sequence[dict[str, float]], drops: Sequence[int] = ()) -> bytes:
    """Loss, top-1/top-5 error and learning rate per epoch; ``drops``: the epochs after which
    the lr was lowered, each marked by a dashed vertical line."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(11, 3.4))
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if all("val_loss" in r for r in history):
        ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(title="loss", xlabel="epoch")
    for key, label in (("train_top1_err", "train top-1"), ("val_top1_err", "val top-1"), ("val_top5_err", "val top-5")):
        if all(key in r for r in history):
            ax_err.plot(epochs, [100 * r[key] for r in history], "o-", label=label)
    ax_err.set(title="error (%)", xlabel="epoch")
    lrs = [r["lr"] for r in history]
    ax_lr.step(epochs, lrs, where="post")
    ax_lr.set(title="learning rate (after the epoch)", xlabel="epoch", yscale="log" if min(lrs) > 0 else "linear")
    for e in drops:
        for ax in (ax_loss, ax_err, ax_lr):
            ax.axvline(e + 0.5, color="#c0392b", ls="--", lw=1)
    for ax in (ax_loss, ax_err):
        ax.legend(fontsize=8)
    for ax in (ax_loss, ax_err, ax_lr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


def top5_panels(images: Sequence[np.ndarray], truths: Sequence[str], guesses: Sequence[Sequence[str]],
                probs: Sequence[Sequence[float]], correct: Sequence[int | None], columns: int = 4) -> bytes:  # fmt: skip
    """Figure 4 (left): each image above its five guesses as horizontal bars, the correct one
    (if among them) in green. ``images``: ``H x W x 3`` or ``H x W`` uint8 arrays;
    ``correct[i]``: the position of the true class among the guesses, or ``None``."""
    n = len(images)
    rows = -(-n // columns)
    fig = Figure(figsize=(3.0 * columns, 4.2 * rows))
    grid = fig.add_gridspec(rows * 2, columns, height_ratios=[1.6, 1.0] * rows, hspace=0.35, wspace=0.6)
    for i in range(n):
        r, c = divmod(i, columns)
        ax_img = fig.add_subplot(grid[2 * r, c])
        img = images[i]
        ax_img.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax_img.set_title(truths[i], fontsize=9, color=CORRECT if correct[i] == 0 else "black")
        ax_img.axis("off")
        ax_bar = fig.add_subplot(grid[2 * r + 1, c])
        k = len(guesses[i])
        colours = [CORRECT if j == correct[i] else OTHER for j in range(k)]
        ax_bar.barh(range(k), probs[i], color=colours)
        ax_bar.set_yticks(range(k), [g[:22] for g in guesses[i]], fontsize=7)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=7)
    return to_png(fig)


def heat_map(matrix: np.ndarray, classes: Sequence[str]) -> bytes:
    """The confusion matrix, rows normalised to the share of each true class (labels shown up
    to 30 classes)."""
    n = matrix.shape[0]
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    side = min(10.0, 3.0 + 0.25 * n)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if n <= 30:
        ax.set_xticks(range(n), [c[:16] for c in classes], rotation=90, fontsize=7)
        ax.set_yticks(range(n), [c[:16] for c in classes], fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (share of each true class)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return to_png(fig)


def histogram(values: np.ndarray, title: str, xlabel: str) -> bytes:
    """Integer-valued histogram (one bar per value)."""
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    if len(values):
        lo, hi = int(values.min()), int(values.max())
        counts = np.bincount(values - lo, minlength=hi - lo + 1)
        ax.bar(range(lo, hi + 1), counts, color=OTHER, width=0.8)
        ax.set_xlim(lo - 1, hi + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel=xlabel, ylabel="mistakes")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return to_png(fig)


def probe_accuracy(layers: Sequence[str], accuracy: Sequence[float], references: dict[str, float]) -> bytes:
    """Test accuracy of a linear probe per layer (line), each reference (HOG, pixels) a dashed level."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    ax.plot(range(len(layers)), [100 * a for a in accuracy], "o-", color=CORRECT, label="layer + linear SVM")
    for (name, value), style in zip(references.items(), ("--", ":", "-.")):
        ax.axhline(100 * value, color=OTHER if name != "hog" else "#a23b00", linestyle=style, label=f"{name} + linear SVM")
    values = [100 * v for v in (*accuracy, *references.values())]
    ax.set_ylim(min(values) - 1, max(values) + 1)  # the reference lines inside the axes, not on their edge
    ax.set_xticks(range(len(layers)), layers)
    ax.set(ylabel="test accuracy (%)", title="how linearly separable each layer is")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return to_png(fig)
