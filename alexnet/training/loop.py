"""One training step and one training epoch, as plain functions.

Kept small and flat (torchvision's ``references/classification`` style): the trainer
(:mod:`alexnet.training.trainer`) strings :func:`train_one_epoch` and
:func:`alexnet.evaluation.evaluate` together; the benchmarks time :func:`train_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.evaluation.metrics import Meter
from alexnet.runtime import autocast


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    precision: str,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and one optimiser step; returns (mean loss, logits), not synced."""
    with autocast(images.device, precision):
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[int, torch.Tensor], torch.Tensor],
    meter: Meter,
    precision: str,
    *,
    start_step: int = 0,
    label_smoothing: float = 0.0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step: Callable[[int, torch.Tensor], None] | None = None,
) -> Meter:
    """Train on ``batches`` (uint8 images, labels), numbering steps from ``start_step``.

    ``prepare(step, images)`` turns a batch into the network's input (crops, flips,
    normalisation of that step); ``scheduler``, when given, steps after every batch;
    ``after_step(step, loss)`` runs after each step (the trainer's checkpoints and stop checks).
    Losses and hits accumulate in ``meter``, which is returned.
    """
    model.train()
    device = meter.loss_sum.device
    for step, (images, labels) in enumerate(batches, start=start_step):
        x, y = prepare(step, images), labels.to(device, non_blocking=True)
        loss, logits = train_step(model, optimizer, x, y, precision, label_smoothing)
        meter.update(loss, logits, y)
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step, loss)
    return meter
