"""Learning-rate schedules of the recipes.

* ``plateau`` (the paper, section 5): divide by ``1 / lr_drop_factor`` when the validation
  error stops improving for ``plateau_patience`` epochs, at most ``max_lr_drops`` times; with
  ``warmup_epochs``, a linear warm-up first, stepped per batch (:class:`WarmupPlateau`).
* ``onecycle``: linear warm-up over the first quarter, cosine down to ~0 (for short runs).
* ``cosine``: optional linear warm-up, then cosine decay to 0 over the run.
* ``constant``: optional linear warm-up, then ``lr``.
* ``step``: optional linear warm-up, then ``lr`` times ``lr_drop_factor`` every ``step_epochs``
  epochs (torchvision's StepLR), at most ``max_lr_drops`` times.
"""

from __future__ import annotations

import math

import torch

from alexnet.training.recipes import Recipe


def scheduler_steps_per_batch(recipe: Recipe) -> bool:
    """Whether the scheduler steps after every batch (every schedule but ``plateau``, and
    ``plateau``'s warm-up)."""
    return recipe.schedule != "plateau" or recipe.warmup_epochs > 0


def scheduler_steps_per_epoch(recipe: Recipe) -> bool:
    """Whether the scheduler steps after each epoch's validation, with its error (``plateau``)."""
    return recipe.schedule == "plateau"


class WarmupPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` after a linear warm-up of ``warmup_steps`` batches.

    ``step()`` without a metric is a batch of the warm-up (the lr of batch i is
    ``(i + 1) / warmup_steps`` of the full rate, as the other schedules' warm-up; a no-op
    afterwards); ``step(val_error)`` is the epoch's plateau check. The state (batches seen
    included) is in ``state_dict``, so a resumed run continues the ramp exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, **plateau: float) -> None:
        super().__init__(optimizer, mode="min", **plateau)
        self.warmup_steps, self.warmup_done = max(1, warmup_steps), 0
        self.full_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self._set_warmup_lr()

    def _set_warmup_lr(self) -> None:
        fraction = min(1.0, (self.warmup_done + 1) / self.warmup_steps)
        for group, full in zip(self.optimizer.param_groups, self.full_lrs, strict=True):
            group["lr"] = full * fraction

    def step(self, metrics: float | None = None, epoch: int | None = None) -> None:  # type: ignore[override]
        if metrics is not None:
            super().step(metrics)
        elif self.warmup_done < self.warmup_steps:
            self.warmup_done += 1
            self._set_warmup_lr()


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int, lr: float | None = None):
    """The scheduler of ``recipe``; per-batch ones count steps, ``plateau`` counts epochs.

    ``lr``: the starting learning rate actually used (default ``recipe.lr``; larger with
    ``scale_lr`` over several processes).
    """
    if recipe.schedule == "plateau":
        # min_lr caps the number of drops at max_lr_drops: the floor is start * factor ** drops.
        # The start is the lr the optimizer runs with: a floor computed from the unscaled
        # recipe.lr would sit world_size times too low under scale_lr and allow extra drops.
        # eps (the smallest change applied) is relative to the floor, so that once the lr sits
        # at the floor (up to rounding) a further "drop" to the floor is ignored, while a real
        # drop (by 1 - factor of the lr) always exceeds it.
        start = recipe.lr if lr is None else lr
        floor = start * recipe.lr_drop_factor**recipe.max_lr_drops
        plateau = {"factor": recipe.lr_drop_factor, "patience": recipe.plateau_patience, "min_lr": floor,
                   "eps": floor * 1e-3}  # fmt: skip
        warmup = round(recipe.warmup_epochs * steps_per_epoch)
        if warmup > 0:
            return WarmupPlateau(optimizer, warmup, **plateau)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **plateau)
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "onecycle":
        warmup = max(warmup, total // 4)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "constant":
            return 1.0
        if recipe.schedule == "step":
            return recipe.lr_drop_factor ** min(recipe.max_lr_drops, step // (recipe.step_epochs * steps_per_epoch))
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
