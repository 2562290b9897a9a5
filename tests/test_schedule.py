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


def test_plateau_warmup_ramps_per_batch_then_drops_per_epoch_and_resumes_exactly() -> None:
    recipe = get_recipe("paper").with_overrides(warmup_epochs=1.0, plateau_patience=0, max_lr_drops=1, epochs=5)
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=0.01, momentum=0.9)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch=4, lr=0.01)
    seen = []
    for _ in range(6):  # batches: the lr of batch i is (i + 1) / 4 of the rate, then the rate
        seen.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert seen == [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]
    state, optimizer_state = scheduler.state_dict(), optimizer.state_dict()
    scheduler.step(0.5)
    scheduler.step(0.6)  # no improvement with patience 0: one drop (max_lr_drops 1)
    assert abs(optimizer.param_groups[0]["lr"] - 0.001) < 1e-12
    # Resumed as the trainer does (scheduler built, then both states loaded): the warm-up is over.
    optimizer2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9)
    resumed = make_scheduler(optimizer2, recipe, steps_per_epoch=4, lr=0.01)
    optimizer2.load_state_dict(optimizer_state)
    resumed.load_state_dict(state)
    resumed.step()
    assert optimizer2.param_groups[0]["lr"] == 0.01 and resumed.warmup_done == 4


def test_step_schedule_drops_every_step_epochs_as_torchvision_steplr() -> None:
    recipe = get_recipe("torchvision").with_overrides(step_epochs=2, max_lr_drops=2, epochs=8)
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=0.01, momentum=0.9)
    ours = make_scheduler(optimizer, recipe, steps_per_epoch=3, lr=0.01)
    q = torch.nn.Parameter(torch.zeros(1))
    reference_optimizer = torch.optim.SGD([q], lr=0.01, momentum=0.9)
    reference = torch.optim.lr_scheduler.StepLR(reference_optimizer, step_size=2, gamma=0.1)  # stepped per epoch
    for epoch in range(8):
        for _ in range(3):
            want = reference_optimizer.param_groups[0]["lr"] if epoch < 6 else 1e-4  # at most 2 drops
            assert abs(optimizer.param_groups[0]["lr"] - want) < 1e-12, epoch
            optimizer.step()
            ours.step()
        reference_optimizer.step()
        reference.step()
