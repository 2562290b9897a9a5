"""Choosing the learning rate for data the recipe was not tuned on (your own images).

* :func:`step_scaled_lr`: the default of ``alexnet train`` without ``--lr``: the recipe's rate,
  lowered for runs shorter than the one it was tuned for (``Recipe.lr_reference_steps``).
* The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
  Networks", section 3.3) behind ``alexnet train --lr auto``.

A throw-away copy of the freshly initialised model trains for a few dozen steps while the
learning rate grows geometrically from ``min_lr`` to ``max_lr``; the smoothed loss against the
learning rate shows where training makes progress and where it becomes unstable. The suggested
rate is the one at the minimum of the smoothed loss (Smith's upper bound of a cycle: where the
loss stops falling), divided by ``safety`` (1 by default: measured on the own-images datasets, the
one-cycle schedule's warm-up makes even that edge a conservative peak; fastai's lr/10 reading
was 7-55x below the best rate of a sweep), capped by the recipe's own rate, so that data on
which the recipe's rate is safe keeps it.

Deterministic: the batches are the run's own first batches (keyed by seed), the copy starts
from the run's initial weights, and the global RNG (dropout) is restored afterwards, so the
real run is the same whether or not the test ran before it.

The pure parts (:func:`geometric_lrs`, :func:`smooth`, :func:`suggest_lr`) are separate from
the one that trains (:func:`range_test`), so each can be tested on its own.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.errors import UserError
from alexnet.io import atomic_write, atomic_write_json, atomic_write_text

CURVE_JSON = "lr_range_test.json"
CURVE_CSV = "lr_range_test.csv"
CURVE_PNG = "lr_range_test.png"


@dataclass(frozen=True)
class RangeTestConfig:
    """How the range test sweeps.

    ``steps`` is small on purpose: the test costs ``steps`` training steps (50 x 128 images is
    3% of the Fashion-MNIST demo and ~30% of a 15-epoch run on 1,500 images).
    """

    min_lr: float = 1e-4
    max_lr: float = 10.0
    steps: int = 50
    beta: float = 0.9  # EMA factor of the loss smoothing (about a 10-step window)
    diverge_factor: float = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
    safety: float = 1.0  # suggestion = lr at the smoothed minimum / safety

    def __post_init__(self) -> None:
        if not (0 < self.min_lr < self.max_lr and self.steps >= 2 and 0 <= self.beta < 1 and self.safety >= 1):
            raise ValueError(f"bad range-test settings: {self}")


@dataclass(frozen=True)
class RangeTestResult:
    """The curve (one entry per step taken) and the suggestion read from it."""

    lrs: list[float]
    losses: list[float]  # raw training loss of each step
    smoothed: list[float]
    min_loss_lr: float
    suggested_lr: float
    diverged: bool  # the sweep stopped early because the loss blew up
    config: RangeTestConfig = field(default_factory=RangeTestConfig)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def geometric_lrs(config: RangeTestConfig) -> list[float]:
    """``config.steps`` learning rates from ``min_lr`` to ``max_lr``, equally spaced in log."""
    ratio = (config.max_lr / config.min_lr) ** (1.0 / (config.steps - 1))
    return [config.min_lr * ratio**i for i in range(config.steps)]


def smooth(losses: list[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction (as Adam's moments): no start-up dip."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def suggest_lr(lrs: list[float], smoothed: list[float], safety: float, cap: float | None = None) -> tuple[float, float]:
    """(lr at the smoothed minimum, suggested lr = that / ``safety``, at most ``cap``).

    Non-finite losses count as +inf, so a sweep that blew up still has its minimum before it.
    """
    finite = [s if math.isfinite(s) else math.inf for s in smoothed]
    best = min(range(len(finite)), key=finite.__getitem__)
    suggestion = lrs[best] / safety
    return lrs[best], min(suggestion, cap) if cap is not None else suggestion


def range_test(
    step: Callable[[float], float], config: RangeTestConfig = RangeTestConfig(), cap: float | None = None
) -> RangeTestResult:
    """Run the sweep: ``step(lr)`` trains one step at ``lr`` and returns its loss."""
    lrs, losses = geometric_lrs(config), []
    diverged = False
    for lr in lrs:
        losses.append(step(lr))
        smoothed = smooth(losses, config.beta)
        low = min((s for s in smoothed if math.isfinite(s)), default=math.inf)
        if not math.isfinite(smoothed[-1]) or smoothed[-1] > config.diverge_factor * low:
            diverged = True
            break
    taken = lrs[: len(losses)]
    smoothed = smooth(losses, config.beta)
    min_lr, suggested = suggest_lr(taken, smoothed, config.safety, cap)
    return RangeTestResult(taken, losses, smoothed, min_lr, suggested, diverged, config)


def model_step(
    model: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    train_step: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> Callable[[float], float]:
    """A ``step(lr)`` for :func:`range_test` that trains a deep copy of ``model`` (the caller's
    model is untouched) with a fresh optimizer from ``make_optimizer`` on the next batch.

    ``train_step(model, optimizer, images, labels)`` is the run's own training step, so the test
    sees the run's loss, precision and optimiser.
    """
    trial = copy.deepcopy(model).train()
    optimizer = make_optimizer(trial)

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        loss, _ = train_step(trial, optimizer, images, labels)
        return float(loss.item())

    return step


def find_lr(
    model: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    train_step: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    cap: float | None = None,
    config: RangeTestConfig = RangeTestConfig(),
) -> RangeTestResult:
    """The range test on a copy of ``model``; the global torch RNG (dropout) is left as it was."""
    rng = torch.get_rng_state()
    try:
        return range_test(model_step(model, make_optimizer, batches, train_step), config, cap)
    finally:
        torch.set_rng_state(rng)


def save_curve(result: RangeTestResult, folder: str | Path) -> list[Path]:
    """Write the curve into ``folder``: JSON and CSV always, a PNG plot when matplotlib is
    installed (it is optional). Returns the paths written."""
    folder = Path(folder)
    paths = [folder / CURVE_JSON, folder / CURVE_CSV]
    atomic_write_json(paths[0], result.to_dict())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["lr", "loss", "smoothed_loss"])
    writer.writerows(zip(result.lrs, result.losses, result.smoothed))
    atomic_write_text(paths[1], buffer.getvalue())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed")
    ax.axvline(result.suggested_lr, color="g", ls="--", label=f"chosen {result.suggested_lr:.3g}")
    ax.axvline(result.min_loss_lr, color="r", ls=":", label=f"minimum {result.min_loss_lr:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    finite = [s for s in result.smoothed if math.isfinite(s)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * min(finite)) * 1.1)
    ax.legend()
    png = io.BytesIO()
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(folder / CURVE_PNG, lambda f: f.write(png.getvalue()))
    return [*paths, folder / CURVE_PNG]


def training_batches(dataset: Any, pipeline: Any, plan: Any, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The run's own training batches (epoch 0, 1, ... of ``plan``), augmented and normalised
    as the training loop does it, this process's share of each global batch."""
    epoch = 0
    while True:
        steps = 0
        for step, (images, labels) in enumerate(dataset.batches("train", dataclasses.replace(plan, epoch=epoch))):
            params = pipeline.crop_params(epoch, step, plan.global_batch)
            params = params.slice(plan.rank * plan.local_batch, (plan.rank + 1) * plan.local_batch)
            yield pipeline.train(images, params), labels.to(device, non_blocking=True)
            steps += 1
        if steps == 0:
            raise UserError(f"the training set is smaller than one batch ({plan.global_batch}); use a smaller --batch-size")
        epoch += 1


def auto_lr(
    model: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    train_step: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    cap: float,
    out: Path | None,
    ctx: Any,
    log: Callable[[str], None],
) -> float:
    """``--lr auto`` in the trainer: the range test, the curve saved in ``out`` and the choice
    logged (rank 0), and every process using rank 0's choice."""
    from alexnet.training.distributed import gather_objects

    start = time.perf_counter()
    result = find_lr(model, make_optimizer, batches, train_step, cap=cap)
    lr = gather_objects(result.suggested_lr, ctx)[0]
    if ctx.is_main:
        written = save_curve(result, out) if out is not None else []
        capped = " (the recipe's lr, the cap)" if lr >= cap else ""
        log(f"--lr auto: range test over {len(result.lrs)} steps ({time.perf_counter() - start:.1f}s), loss lowest at "
            f"lr {result.min_loss_lr:.3g}; chose lr {lr:.3g}{capped}; curve in {', '.join(p.name for p in written)}")
    return lr


# Exponent of the step scaling below, chosen by measurement (docs/RESULTS.md, "Your own images"): the
# rate a run tolerates grows with the length of its warm-up, which is a fixed fraction of it.
STEP_SCALING_POWER = 0.5


def step_scaled_lr(lr: float, reference_steps: int, total_steps: int, power: float = STEP_SCALING_POWER) -> float:
    """``lr`` for a run of ``total_steps`` when it was tuned for ``reference_steps``: unchanged for
    runs at least that long (or when ``reference_steps`` is 0), else x (total / reference) ** power."""
    if reference_steps <= 0 or total_steps <= 0 or total_steps >= reference_steps:
        return lr
    return lr * (total_steps / reference_steps) ** power


def step_scaled_recipe(recipe: Any, total: int, log: Callable[[str], None] | None = None) -> Any:
    """``recipe`` with its ``lr`` scaled to a run of ``total`` steps (logged when it changes)."""
    lr = step_scaled_lr(recipe.lr, recipe.lr_reference_steps, total)
    if lr != recipe.lr and log is not None:
        log(f"lr {recipe.lr:g} of recipe {recipe.name!r} was tuned for {recipe.lr_reference_steps} steps; this run has "
            f"{total}, so lr {lr:.3g} (x ({total}/{recipe.lr_reference_steps})^{STEP_SCALING_POWER:g}); "
            "give --lr to set it, or --lr auto for a range test")
    return recipe.with_overrides(lr=lr)
