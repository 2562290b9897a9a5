"""Learning-rate schedules: the plateau floor follows the lr the optimizer really starts with."""

from __future__ import annotations

import torch

from alexnet.training.recipes import get_recipe
from alexnet.training.schedule import make_scheduler


def lrs_after_plateaus(scaled_lr: float, epochs: int = 30) -> list[float]:
    recipe = get_recipe("small").with_overrides(schedule="plateau", lr=0.01, lr_drop_factor=0.1, max_lr_drops=2,
                                                plateau_patience=0, epochs=epochs)  # fmt: skip
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=scaled_lr)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch=1, lr=scaled_lr)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(epochs):
        scheduler.step(1.0)  # the validation error never improves: drop as often as allowed
        seen.append(optimizer.param_groups[0]["lr"])
    return seen


def test_plateau_drops_at_most_max_lr_drops_times_with_a_scaled_lr() -> None:
    # scale_lr over 4 processes: lr 0.04. The floor used to come from the unscaled 0.01, which
    # let the lr fall a third time (to the clamp at 5e-5).
    for lr in (0.01, 0.04):
        distinct = sorted(set(lrs_after_plateaus(lr)), reverse=True)
        assert len(distinct) == 3, distinct
        assert distinct[-1] == torch.tensor(lr * 0.01).item() or abs(distinct[-1] - lr * 0.01) < 1e-12
