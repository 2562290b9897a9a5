"""Early warning for a run that is not learning: the training loss still at chance level.

A classifier that has learned nothing predicts the uniform distribution, whose cross-entropy is
ln(num_classes) whatever the labels (label smoothing included). A run whose training loss is
within a few percent of that after a good part of the schedule (past the one-cycle warm-up) is
almost always one whose learning rate is wrong for the data: the practitioner should hear it
then, with the flag to change, rather than conclude that the network cannot learn their images.
The run goes on (it may still recover).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class ChanceWatch:
    """Watches the training loss of one run; :meth:`update` returns a message once at most.

    The loss averaged over the ``window`` steps that end at ``fraction`` of the run is compared
    with ln(``num_classes``); the losses stay on the device until that one step (no sync per step).
    """

    num_classes: int
    total_steps: int
    lr: float
    fraction: float = 0.3  # past the one-cycle warm-up (the first quarter of the steps)
    tolerance: float = 0.05  # "at chance": mean loss >= (1 - tolerance) x ln(num_classes)
    max_window: int = 20
    fired: bool = False
    _sum: torch.Tensor | None = field(default=None, repr=False)
    _count: int = 0

    @property
    def check_step(self) -> int:
        """The global step (1-based) after which the check is made."""
        return max(1, round(self.fraction * self.total_steps))

    @property
    def window(self) -> int:
        return max(1, min(self.max_window, self.check_step // 2))

    @property
    def chance_loss(self) -> float:
        return math.log(self.num_classes)

    def update(self, step: int, loss: torch.Tensor) -> str | None:
        """Record the loss of global step ``step`` (1-based); the warning text when it fires."""
        if self.fired or self.num_classes < 2 or step > self.check_step or step <= self.check_step - self.window:
            return None
        value = loss.detach().float()
        self._sum = value if self._sum is None else self._sum + value
        self._count += 1
        if step < self.check_step:
            return None
        mean = float(self._sum.item()) / self._count
        return self.verdict(mean, step)

    def verdict(self, mean_loss: float, step: int) -> str | None:
        """The warning if ``mean_loss`` is at chance level (and it has not fired yet)."""
        if self.fired or not (math.isfinite(mean_loss) and mean_loss >= (1 - self.tolerance) * self.chance_loss):
            return None
        self.fired = True
        return (
            f"warning: after {step}/{self.total_steps} steps the training loss ({mean_loss:.3f}) is still at chance "
            f"level (ln {self.num_classes} = {self.chance_loss:.3f}): the network is not learning. Likely cause: the "
            f"learning rate {self.lr:g} is wrong for this data, usually too high for a small dataset (units die and the "
            f"loss settles at chance), more rarely too low. The run goes on; to fix it, run again with --lr auto "
            f"(a range test picks the rate) or a lower --lr such as {self.lr / 10:g}"
        )
