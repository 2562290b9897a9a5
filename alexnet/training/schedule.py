"""Learning-rate schedules of the recipes.

* ``plateau`` (the paper, section 5): divide by ``1 / lr_drop_factor`` when the validation
  error stops improving for ``plateau_patience`` epochs, at most ``max_lr_drops`` times.
* ``onecycle``: linear warm-up over the first quarter, cosine down to ~0 (for short runs).
* ``cosine``: optional linear warm-up, then cosine decay to 0 over the run.
* ``constant``: optional linear warm-up, then ``lr``.
"""

from __future__ import annotations

import math

import torch

from alexnet.training.recipes import Recipe


def scheduler_steps_per_batch(recipe: Recipe) -> bool:
    """Whether the scheduler steps after every batch (True) or after each epoch's validation."""
    return recipe.schedule != "plateau"


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
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=recipe.lr_drop_factor, patience=recipe.plateau_patience, min_lr=floor,
            eps=floor * 1e-3,
        )
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "onecycle":
        warmup = max(warmup, total // 4)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
