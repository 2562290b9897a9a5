"""Training recipes: one frozen dataclass per recipe; every field can be overridden from the CLI.

Units: ``lr`` is per step for a batch of ``batch_size`` images (the global batch, summed over
processes); ``weight_decay`` is the L2 coefficient added to the gradient; epochs are passes over
the training split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from alexnet.data.presets import EVAL_VIEWS, PCA_MODES
from alexnet.errors import UserError

SCHEDULES = ("plateau", "onecycle", "cosine", "constant", "step")
NORMALIZATIONS = ("mean-image", "channel")
EVAL_VIEW_NAMES = tuple(EVAL_VIEWS)


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run (model, optimiser, schedule, regularisation)."""

    name: str
    model: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    schedule: str
    lr_drop_factor: float
    max_lr_drops: int
    plateau_patience: int
    warmup_epochs: float
    label_smoothing: float
    decay_biases: bool
    init: str
    dropout: float
    normalize: str = "channel"
    crop_pad: int = -1
    pca_lighting: str = "off"
    pca_std: float = 0.1
    scale_lr: bool = False
    eval_views: str = "centre"  # validation patches per image: centre | flip | ten-crop (section 4.1)
    # The number of steps ``lr`` was tuned for; `alexnet train` without --lr scales the
    # rate down for shorter runs (training/lr_finder.py, step_scaled_lr). 0 = never scaled.
    lr_reference_steps: int = 0
    step_epochs: int = 30  # the ``step`` schedule: multiply the lr by lr_drop_factor every this many epochs

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight-decay must be >= 0"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (0 < self.lr_drop_factor < 1, "lr-drop-factor must be in (0, 1)"),
            (self.max_lr_drops >= 0 and self.plateau_patience >= 0, "max-lr-drops and plateau-patience must be >= 0"),
            (0 <= self.warmup_epochs <= self.epochs, "warmup-epochs must be in [0, epochs]"),
            (0 <= self.label_smoothing < 1, "label-smoothing must be in [0, 1)"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.normalize in NORMALIZATIONS, f"normalize must be one of {', '.join(NORMALIZATIONS)}"),
            (self.pca_lighting in PCA_MODES, f"pca-lighting must be one of {', '.join(PCA_MODES)}"),
            (self.pca_std >= 0, "pca-std must be >= 0"),
            (self.eval_views in EVAL_VIEW_NAMES, f"eval-views must be one of {', '.join(EVAL_VIEW_NAMES)}"),
            (self.crop_pad >= -1, "crop-pad must be >= 0 (or -1 for the dataset's default)"),
            (self.lr_reference_steps >= 0, "lr-reference-steps must be >= 0"),
            (self.step_epochs >= 1, "step-epochs must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"recipe {self.name!r}: {message}")

    def with_overrides(self, **overrides: object) -> Recipe:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Section 5 of the paper, "Details of learning".
PAPER = Recipe(
    name="paper",
    model="alexnet",
    epochs=90,  # "roughly 90 cycles through the training set of 1.2 million images"
    batch_size=128,  # "batch size of 128 examples"
    lr=0.01,  # "The learning rate was initialized at 0.01 and equal for all layers"
    momentum=0.9,  # "momentum of 0.9"
    weight_decay=5e-4,  # "weight decay of 0.0005", applied to every weight of the update rule
    nesterov=False,  # the update rule of section 5 is classical momentum
    schedule="plateau",  # "divide the learning rate by 10 when the validation error rate stopped improving"
    lr_drop_factor=0.1,  # "by 10"
    max_lr_drops=3,  # "reduced three times prior to termination"
    plateau_patience=5,  # not in the paper (the authors watched by hand); epochs without improvement
    warmup_epochs=0.0,
    label_smoothing=0.0,
    decay_biases=True,  # the update rule decays every parameter w
    # Section 5's init where SGD at lr 0.01 is stable with it, else Caffe's (bvlc_alexnet: fc6/fc7
    # std 0.005, biases 0.1 where section 5 has 1): the trainer measures the output layer's
    # curvature on the first batch (training/health.py). With biases of 1 every hidden unit starts
    # active and that curvature is ~||fc7||^2 / classes: stable on ImageNet's 1,000 classes (lr
    # limit ~0.05), not on 10 (~0.002: the loss reaches ~30 in 5 steps and fc7 dies by step 20; a
    # 30-step warm-up diverges once the lr passes ~0.003). docs/RESULTS.md, "The paper's recipe
    # on real pictures". `--init paper` is section 5 to the letter whatever the data.
    init="auto",
    dropout=0.5,  # section 4.2: "setting to zero the output of each hidden neuron with probability 0.5"
    normalize="mean-image",  # section 2: "subtracting the mean activity over the training set from each pixel"
    pca_lighting="paper",  # section 4.1: alpha_i * lambda_i on the RGB covariance, alpha ~ N(0, 0.1)
    pca_std=0.1,  # "standard deviation 0.1"
    scale_lr=False,  # large-batch option (Goyal et al. 2017): lr x number of processes
)

# The CPU demo: alexnet-small on Fashion-MNIST, chosen by measurement on a 2-core machine (see
# docs/RESULTS.md). Same optimiser family as the paper (SGD with momentum 0.9, weight
# decay 5e-4, batch 128); a one-cycle schedule because the demo has minutes, not 90 epochs,
# and plateau detection needs many epochs to act.
SMALL = Recipe(
    name="small",
    model="alexnet-small",
    epochs=4,
    batch_size=128,
    lr=0.1,  # peak of the one-cycle schedule (measured: 91.6% vs 91.1% with 0.05, 5 epochs)
    momentum=0.9,
    weight_decay=5e-4,
    nesterov=True,
    schedule="onecycle",
    lr_drop_factor=0.1,
    max_lr_drops=3,
    plateau_patience=2,
    warmup_epochs=0.0,
    label_smoothing=0.1,
    decay_biases=False,
    init="kaiming",
    # Section 4.2 says dropout "roughly doubles the number of iterations required to converge";
    # with a two-minute budget that is the whole difference (4 epochs, measured: 88.6% with
    # dropout 0.5 and 2 px translations, 90.8% without). `--dropout 0.5 --crop-pad 2` for long runs.
    dropout=0.0,
    crop_pad=0,  # mirror-only augmentation (see above)
    normalize="channel",  # grayscale 28 px: per-channel standardisation
    pca_lighting="off",  # PCA colour noise needs RGB
    # lr 0.1 was tuned on 4 epochs x 468 steps of Fashion-MNIST; shorter runs (small data of one's
    # own) are unstable at that rate, so `alexnet train` scales it (see lr_finder.py).
    lr_reference_steps=4 * 468,
)

# torchvision's references/classification for its alexnet: `--model alexnet --lr 0.01 --wd 1e-4
# -b 32` on 8 GPUs, SGD with momentum 0.9, StepLR(step_size=30, gamma=0.1), 90 epochs, PyTorch's
# default layer init, ImageNet's per-channel mean/std. Batch 256 here is its global batch on one
# process; under torchrun on 8 processes, --batch-size 32 is the same recipe.
TORCHVISION = Recipe(
    name="torchvision",
    model="alexnet-owt",
    epochs=90,
    batch_size=256,
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    nesterov=False,
    schedule="step",
    lr_drop_factor=0.1,
    max_lr_drops=3,
    plateau_patience=0,
    warmup_epochs=0.0,
    label_smoothing=0.0,
    decay_biases=True,  # torchvision's weight decay covers every parameter (no norm-layer exemptions in AlexNet)
    init="torchvision",
    dropout=0.5,
    normalize="channel",
    pca_lighting="off",
    step_epochs=30,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (PAPER, SMALL, TORCHVISION)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a :class:`UserError` listing the choices if unknown."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None


def recipe_fields() -> list[dataclasses.Field]:
    """The overridable fields (all but ``name``), for building CLI options."""
    return [f for f in dataclasses.fields(Recipe) if f.name != "name"]
