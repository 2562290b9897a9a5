"""Early warnings for a run that is not learning: dead units in its first steps, a loss at chance.

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
from torch import nn

from alexnet.runtime import autocast


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
    # Whether every layer still had live units on the check step's batch (set by the trainer from
    # :func:`activation_report`; None: not looked at). Alive at chance is a slow start, not a divergence.
    alive: bool | None = None
    # The lowest epoch-mean training loss before the check step (set by the trainer; None: no epoch
    # finished yet). Back at chance after learning is a collapse, not a slow start.
    learned_loss: float | None = None
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
        if self.learned_loss is not None and self.learned_loss < (1 - 2 * self.tolerance) * self.chance_loss:
            return (
                f"warning: after {step}/{self.total_steps} steps the training loss ({mean_loss:.3f}) is back at chance "
                f"level (ln {self.num_classes} = {self.chance_loss:.3f}) after reaching {self.learned_loss:.3f} in an "
                f"earlier epoch: training collapsed, usually because the learning rate ({self.lr:g} at its peak) is too "
                f"high for this batch size. The run goes on; to fix it, run again with a lower --lr such as "
                f"{self.lr / 4:g}, or --lr auto (a range test picks the rate)"
            )
        if self.alive and mean_loss <= (1 + self.tolerance) * self.chance_loss:  # at chance, not above it
            return (
                f"warning: after {step}/{self.total_steps} steps the training loss ({mean_loss:.3f}) is still at "
                f"chance level (ln {self.num_classes} = {self.chance_loss:.3f}), though no layer has died: the network "
                f"is starting slowly rather than diverging (small initial weights do this). The run goes on; more "
                f"--epochs, or --lr auto (a range test picks the rate), may help"
            )
        return (
            f"warning: after {step}/{self.total_steps} steps the training loss ({mean_loss:.3f}) is still at chance "
            f"level (ln {self.num_classes} = {self.chance_loss:.3f}): the network is not learning. Likely cause: the "
            f"learning rate {self.lr:g} is wrong for this data, usually too high for a small dataset (units die and the "
            f"loss settles at chance), more rarely too low. The run goes on; to fix it, run again with --lr auto "
            f"(a range test picks the rate) or a lower --lr such as {self.lr / 10:g}"
        )


@dataclass(frozen=True)
class LayerActivity:
    """What one ReLU layer outputs on a batch: its scale and how many of its units are dead.

    A unit is a channel of a convolution or a neuron of a fully-connected layer; it is *dead* on
    the batch when it outputs zero at every position of every image (its gradient is zero too,
    so SGD cannot bring it back from that batch).
    """

    std: float  # standard deviation of the layer's output values (after the ReLU)
    rms: float  # root mean square of the same values (the scale the next layer sees)
    dead_fraction: float  # units that are zero for the whole batch / all units


def activation_report(model: nn.Module, images: torch.Tensor, precision: str = "fp32") -> dict[str, LayerActivity]:
    """Per ReLU layer (named after the weight layer before it: ``conv1`` .. ``fc7``), its
    :class:`LayerActivity` on ``images``, in eval mode (no dropout) and without gradients.

    The model's train/eval mode is restored afterwards. ``precision``: as the run computes.
    """
    names: dict[nn.Module, str] = {}
    last = "input"
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = name.rsplit(".", 1)[-1]
        elif isinstance(module, nn.ReLU) and module not in names:
            names[module] = last
    report: dict[str, LayerActivity] = {}

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        values = output.detach().float()
        per_unit = values.transpose(0, 1).reshape(values.shape[1], -1)  # units x (images * positions)
        dead = (per_unit.amax(dim=1) <= 0).float().mean()
        report[names[module]] = LayerActivity(float(values.std()), float(values.square().mean().sqrt()), float(dead))

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), autocast(images.device, precision):
            model(images)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return report


@dataclass
class DeadStartWatch:
    """Watches the first hundred steps of a run for dead ReLU layers; :meth:`verdict` warns once.

    A net that blows up in its first steps (too large a step for its initial scale: the paper's
    biases of 1 with few classes, docs/RESULTS.md "The paper's recipe on real pictures") ends with
    whole layers whose units output zero for every image; from then on no gradient reaches them
    and the loss sits at chance for good. Seen on the step's own batch (:func:`activation_report`)
    at :attr:`check_steps`, it can be said long before the loss-based :class:`ChanceWatch` fires.
    """

    lr: float
    init: str = ""  # the run's init scheme and schedule: the advice names only fixes that apply
    schedule: str = ""
    check_steps: tuple[int, ...] = (10, 30, 100)
    threshold: float = 0.9  # a layer is dead when this fraction of its units is
    fired: bool = False

    def due(self, step: int) -> bool:
        """Whether global step ``step`` (1-based) is one to check."""
        return not self.fired and step in self.check_steps

    def verdict(self, step: int, report: dict[str, LayerActivity]) -> str | None:
        """The warning if some layer of ``report`` (measured after ``step``) is dead."""
        dead = {name: a.dead_fraction for name, a in report.items() if a.dead_fraction >= self.threshold}
        if self.fired or not dead:
            return None
        self.fired = True
        layers = ", ".join(f"{name} {fraction:.0%}" for name, fraction in dead.items())
        fixes = [] if self.schedule == "onecycle" else ["--warmup-epochs 1"]  # one-cycle warms up already
        fixes += ["--init caffe"] if self.init == "paper" else []
        fixes.append(f"--lr {self.lr / 10:g} (ten times lower)")
        return (
            f"warning: after {step} steps whole layers output zero for every image of the batch (dead units: "
            f"{layers}); no gradient reaches them, so the run will stay at chance. Likely cause: the first steps "
            f"were too large for the initial weights (learning rate {self.lr:g}). The run goes on; to fix it, run "
            f"again with {', '.join(fixes[:-1])}{' or ' if len(fixes) > 1 else ''}{fixes[-1]}"
        )


def output_curvature(model: nn.Module, images: torch.Tensor, iterations: int = 30) -> float | None:
    """The largest eigenvalue of the Hessian of the mean cross-entropy with respect to the output
    layer's weights, at ``images`` (eval mode, no gradients); ``None`` for a model without
    ``forward_features`` and a ``fc8`` output layer.

    That Hessian is the batch mean of (diag(p) - p p^T) (x) h h^T, with h the last hidden layer
    and p the softmax. SGD with momentum mu diverges along its top eigenvector when
    lr > 2 (1 + mu) / lambda (:func:`stable_lr`). When every hidden unit is active and alike
    (section 5's biases of 1), h h^T has one large eigenvalue ~||h||^2 and lambda shrinks with the
    number of classes: the paper's init is stable at lr 0.01 on 1,000 classes, not on 10
    (docs/RESULTS.md, "The paper's recipe on real pictures"). Power iteration, float64.
    """
    layers = model.layers_by_role() if hasattr(model, "layers_by_role") else {}
    if "fc8" not in layers or not hasattr(model, "forward_features"):
        return None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            h = model.forward_features(images).double()
            fc8 = layers["fc8"]
            p = torch.softmax(torch.nn.functional.linear(h, fc8.weight.double(), fc8.bias.double()), dim=1)
    finally:
        model.train(was_training)
    v = torch.randn(p.shape[1], h.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = 0.0
    for _ in range(iterations):
        u = (v @ h.T).T  # B x C: V h_i
        a = p * u - p * (p * u).sum(dim=1, keepdim=True)  # (diag(p_i) - p_i p_i^T) V h_i
        hv = a.T @ h / h.shape[0]
        lam = float((hv * v).sum() / (v * v).sum())
        v = hv / hv.norm().clamp_min(1e-300)
    return lam


def stable_lr(curvature: float, momentum: float) -> float:
    """The largest learning rate at which heavy-ball SGD stays stable along a direction of
    curvature ``curvature``: 2 (1 + momentum) / curvature."""
    return 2 * (1 + momentum) / curvature if curvature > 0 else math.inf
