"""The paper's checkable claims as plans: lists of ordinary ``alexnet train`` runs.

An :class:`Experiment` names the claim (paper section and figure), its arms (the options each
arm changes, and nothing else), one pinned recipe shared by every arm, and a budget per
setting. :func:`make_plan` resolves it for a data source, a number of seeds and an output
folder into :class:`PlannedRun` objects, each holding the exact :class:`TrainConfig` that
``alexnet train`` would run: one run folder per arm and seed.

Every recipe field that matters is pinned here (not taken from the ``small`` recipe's
defaults), so a later change of a default cannot move an experiment's arms.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alexnet.data.subset import SEPARATOR
from alexnet.errors import UserError
from alexnet.experiments.paper_size import is_prepared, prepared_folder
from alexnet.runtime import default_workers
from alexnet.training.config import TrainConfig
from alexnet.training.recipes import PAPER, SMALL, Recipe

BUDGETS = ("quick", "full")
DEFAULT_DATA = "fashion-mnist"
DEFAULT_SEEDS = 3
DEFAULT_OUT = "runs/experiments"


@dataclass(frozen=True)
class Budget:
    """How much data and how many epochs one run gets.

    ``train``/``val``: the fixed subset sizes (``None``: the whole split).
    """

    epochs: int
    train: int | None = None
    val: int | None = None

    def data(self, source: str) -> str:
        """``source`` with this budget's subset appended (``SOURCE@train=N,val=M``)."""
        parts = [f"{k}={v}" for k, v in (("train", self.train), ("val", self.val)) if v is not None]
        return f"{source}{SEPARATOR}{','.join(parts)}" if parts else source

    def describe(self) -> str:
        sizes = ", ".join(
            f"{k} subset of up to {v:,}" for k, v in (("train", self.train), ("val", self.val)) if v is not None
        )
        return f"{self.epochs} epochs" + (f", {sizes}" if sizes else ", full splits")


@dataclass(frozen=True)
class Arm:
    """One arm: a name and the options it sets (model keyword options and recipe fields)."""

    name: str
    model_options: tuple[tuple[str, Any], ...] = ()
    recipe: tuple[tuple[str, Any], ...] = ()

    def changes(self) -> dict[str, Any]:
        """What this arm sets, as ``model.<option>`` / ``recipe.<field>`` keys."""
        return {f"model.{k}": v for k, v in self.model_options} | {f"recipe.{k}": v for k, v in self.recipe}


@dataclass(frozen=True)
class Experiment:
    """One of the paper's claims, as arms x seeds of ordinary training runs plus an analysis.

    ``kind`` picks the analysis (see ``alexnet.experiments.analysis``): ``final`` compares the
    last epoch's validation error; ``speed`` the epochs and seconds to a training-error
    threshold; ``dropout`` the train/val gap and the steps to a training loss; ``views`` the
    test-time views of the same trained nets (``arms`` are then views, not runs).
    """

    name: str
    section: str
    claim: str
    kind: str
    arms: tuple[Arm, ...]
    baseline: str
    recipe: Recipe
    budgets: dict[str, Budget]
    paper: dict[str, str]
    needs_colour: bool = False
    views: tuple[str, ...] = ()
    note: str = ""
    threshold: dict[str, float] = field(default_factory=dict)
    prepared_size: int | None = None  # the runs train on the data prepared at this size (paper_size.py)
    in_all: bool = True  # part of `alexnet experiment all` (the paper net's hour-long CPU runs are not)

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def threshold_for(self, data: str, budget: str, override: float | None = None) -> float | None:
        """The training-error (``speed``) or training-loss (``dropout``) threshold for ``data`` at
        ``budget``: ``threshold["DATASET/BUDGET"]``, else ``["DATASET"]``, else ``["default"]``."""
        if not self.threshold:
            return None
        if override is not None:
            if self.kind == "speed" and not 0 < override < 1:  # an error fraction: 0 and 1 are never crossed / always
                raise UserError(f"{self.name}: --threshold is a training-error fraction in (0, 1), got {override:g}")
            return override
        dataset = data.split(SEPARATOR)[0].split(":")[0]
        for key in (f"{dataset}/{budget}", dataset):
            if key in self.threshold:
                return self.threshold[key]
        return self.threshold["default"]


def _pinned(**fields: Any) -> Recipe:
    """A recipe with every field that shapes the result given here; named ``small`` so that a
    saved run's config reloads through the recipe registry, but sharing none of its defaults."""
    base = {
        "batch_size": 128,  # section 5
        "momentum": 0.9,  # section 5
        "weight_decay": 5e-4,  # section 5
        "nesterov": False,  # section 5's update rule is classical momentum
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,  # the paper has none; losses stay comparable across arms
        "decay_biases": False,
        "init": "kaiming",  # N(0, 0.01) with biases of 1 does not start at this depth and width
        "dropout": 0.5,  # section 4.2: the paper's net uses it in fc6/fc7
        "crop_pad": 2,  # translations of up to 2 px: the 28 px analogue of 227-of-256 crops
        "normalize": "channel",
        "pca_lighting": "off",
        "pca_std": 0.1,
        "scale_lr": False,
        "eval_views": "centre",
        "lr_drop_factor": 0.1,
        "max_lr_drops": 3,
        "plateau_patience": 2,
        "epochs": 1,  # replaced by the budget
    }
    return SMALL.with_overrides(**(base | fields))


# The peak lr of the alexnet-small ablations: 0.02, one fifth of the demo's 0.1, so that every arm
# (no LRN, one tower, a layer removed) trains stably with the same lr. Measured (quick budget,
# seed 2, one-cycle with no warm-up): at 0.05 the no-LRN arm sat at chance for all 4 epochs and
# seed 0 ended at 45.6% error; at 0.02 they ended at 22.5% and 21.9%, and the LRN arm at 21.3%,
# the same as at 0.05 (21.4% +- 1.0% over 3 seeds).
ABLATION_LR = 0.02

# alexnet-small's ablation recipe: one-cycle SGD (the budget is epochs, not a plateau schedule's 90).
SMALL_ABLATION = _pinned(model="alexnet-small", lr=ABLATION_LR, schedule="onecycle")

# Budgets of the alexnet-small ablations. quick: at most 10 minutes for 3 seeds x 2 arms on two
# idle cores (~2,400 img/s training); full: the whole of Fashion-MNIST, the setting to report.
SMALL_BUDGETS = {
    "quick": Budget(epochs=4, train=10_000, val=2_000),
    "full": Budget(epochs=15),
}


def _final(name: str, section: str, claim: str, arms: tuple[Arm, ...], paper: dict[str, str], **kw: Any) -> Experiment:
    return Experiment(name=name, section=section, claim=claim, kind="final", arms=arms, baseline=arms[0].name,
                      recipe=kw.pop("recipe", SMALL_ABLATION), budgets=kw.pop("budgets", SMALL_BUDGETS), paper=paper,
                      **kw)  # fmt: skip


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            name="relu-vs-tanh",
            section="3.1, Figure 1",
            claim="a four-layer CNN with ReLUs reaches 25% training error on CIFAR-10 ~6x faster than with tanh",
            kind="speed",
            arms=(Arm("relu", (("activation", "relu"),)), Arm("tanh", (("activation", "tanh"),))),
            baseline="relu",
            # Figure 1: "No regularization of any kind was employed" (no weight decay, no dropout,
            # no translations; the dataset's mirror flips remain); a constant lr, the same for both
            # arms (the paper tuned each net's lr separately; one lr keeps the arms one option apart).
            recipe=_pinned(model="fourlayer", lr=0.05, schedule="constant", weight_decay=0.0, dropout=0.0, crop_pad=0),
            budgets={"quick": Budget(epochs=8, train=8_000, val=2_000), "full": Budget(epochs=30)},
            # Figure 1's 25% on CIFAR-10 is where its ReLU curve flattens, ~1.4x the net's final
            # 18% test error. On Fashion-MNIST these nets end near 8.5% (full budget, measured,
            # docs/RESULTS.md), so 12% is that line at the full budget; the quick budget's 8,000
            # images do not get there, and 20% is the point its ReLU net passes (at the full budget
            # both nets pass 20% in the second epoch: 1.08x). `--threshold` sets another.
            threshold={"fashion-mnist": 0.20, "fashion-mnist/full": 0.12, "default": 0.25},
            paper={"relu": "reaches 25% train error (CIFAR-10) in ~6 epochs", "tanh": "~6x the epochs of ReLU (~36)"},
        ),
        _final(
            "lrn",
            "3.3",
            "local response normalisation reduces top-1 error by 1.4% (ImageNet); 13% -> 11% (CIFAR-10)",
            (Arm("lrn", (("lrn", True),)), Arm("no-lrn", (("lrn", False),))),
            {
                "lrn": "ImageNet 40.7% top-1; CIFAR-10 four-layer net 11%",
                "no-lrn": "+1.4% top-1 (ImageNet); 13% (CIFAR-10)",
            },
        ),
        _final(
            "overlapping-pooling",
            "3.4",
            "overlapping pooling (3/2) reduces top-1 error by 0.4% against 2/2",
            (
                Arm("overlapping", (("pooling", "overlapping"),)),
                Arm("non-overlapping", (("pooling", "non-overlapping"),)),
            ),
            {"overlapping": "baseline", "non-overlapping": "+0.4% top-1 (ImageNet)"},
        ),
        Experiment(
            name="dropout",
            section="4.2",
            claim='without dropout "substantial overfitting"; dropout roughly doubles the iterations to converge',
            kind="dropout",
            arms=(Arm("dropout-0.5", recipe=(("dropout", 0.5),)), Arm("no-dropout", recipe=(("dropout", 0.0),))),
            baseline="dropout-0.5",
            # No translations, so that overfitting has room to show within the budget.
            recipe=_pinned(model="alexnet-small", lr=0.05, schedule="onecycle", crop_pad=0),
            budgets={"quick": Budget(epochs=8, train=5_000, val=2_000), "full": Budget(epochs=30, train=20_000)},
            # A training loss (cross-entropy, nats) both arms reach: the dropout arm ends the quick
            # budget near 0.46 (measured, docs/RESULTS.md). `--threshold` re-analyses without training.
            threshold={"default": 0.5},
            paper={"dropout-0.5": "~2x the iterations to converge", "no-dropout": "substantial overfitting"},
        ),
        _final(
            "two-towers",
            "3.2",
            "the two-tower net beats one tower with half the kernels by 1.7% top-1",
            (Arm("two-towers", (("towers", 2),)), Arm("one-tower", (("towers", 1),))),
            {"two-towers": "baseline", "one-tower": "+1.7% top-1 (ImageNet)"},
        ),
        _final(
            "pca-colour",
            "4.1",
            "PCA colour augmentation reduces top-1 error by over 1%",
            (Arm("pca", recipe=(("pca_lighting", "paper"),)), Arm("no-pca", recipe=(("pca_lighting", "off"),))),
            {"pca": "baseline", "no-pca": "+1% top-1 or more (ImageNet)"},
            needs_colour=True,
        ),
        Experiment(
            name="ten-crop",
            section="4.1",
            claim="averaging the softmax of ten patches (corners, centre, mirrors) at test time",
            kind="views",
            arms=(Arm("centre"), Arm("ten-crop")),
            baseline="centre",
            recipe=SMALL_ABLATION,
            budgets=SMALL_BUDGETS,
            views=("centre", "ten-crop"),
            note="At 28 px the crop is the whole image, so the five crops coincide: ten-crop measures the mirrors.",
            paper={"centre": "no number in the paper", "ten-crop": "lower error (no number in the paper)"},
        ),
        _final(
            "paper-recipe",
            "5",
            "the paper's net learns real pictures at 227 px with the paper's recipe (SGD, lr 0.01, init N(0, 0.01) "
            "with biases of 1)",
            (Arm("paper"), Arm("as-printed", recipe=(("init", "paper"),))),
            {
                "paper": "the recipe as shipped (section 5; Caffe's init where section 5's is unstable)",
                "as-printed": "section 5's init to the letter: dies at chance on 10 classes (docs/RESULTS.md)",
            },
            recipe=PAPER,
            # quick: 4 epochs of 5,000 images (156 steps of 128) at 227 px; full: all of
            # Fashion-MNIST for 12 epochs (Dive into Deep Learning's AlexNet: ~88% in 10).
            budgets={"quick": Budget(epochs=4, train=5_000, val=1_000), "full": Budget(epochs=12)},
            prepared_size=256,
            in_all=False,
            note="Fashion-MNIST's 28 px images resized to 256 px by `alexnet prepare --size 256`, 227 px crops.",
        ),
        _final(
            "depth",
            "7",
            "removing any middle convolutional layer costs about 2% top-1",
            tuple(
                Arm(name, (("remove", r),))
                for name, r in (("full", "none"), ("no-conv2", "conv2"), ("no-conv3", "conv3"), ("no-conv4", "conv4"))
            ),
            {"full": "baseline", "no-conv2": "+~2% top-1", "no-conv3": "+~2% top-1", "no-conv4": "+~2% top-1"},
            recipe=_pinned(model="alexnet-small-depth", lr=ABLATION_LR, schedule="onecycle"),
        ),
    )
}


@dataclass(frozen=True)
class PlannedRun:
    """One ``alexnet train`` run of a plan."""

    arm: str
    seed: int
    config: TrainConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.out)


@dataclass(frozen=True)
class Plan:
    """An experiment resolved for a data source, seeds, budget and output folder."""

    experiment: Experiment
    data: str
    seeds: tuple[int, ...]
    budget_name: str
    budget: Budget
    out: Path
    runs: tuple[PlannedRun, ...]
    threshold_override: float | None = None
    to_prepare: str | None = None  # the source the runs' data folder is prepared from (prepared_size)

    @property
    def threshold(self) -> float | None:
        """The ``speed``/``dropout`` threshold for this plan's data (``None`` for other kinds)."""
        return self.experiment.threshold_for(self.data, self.budget_name, self.threshold_override)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; a :class:`UserError` listing the choices if unknown."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise UserError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}, or all") from None


def make_plan(
    name: str,
    data: str = DEFAULT_DATA,
    seeds: int = DEFAULT_SEEDS,
    budget: str = "quick",
    out: str | Path = DEFAULT_OUT,
    progress: bool = True,
    device: str = "auto",
    precision: str = "auto",
    threshold: float | None = None,
    arms: tuple[str, ...] | None = None,
) -> Plan:
    """The runs of experiment ``name``: one per arm (views: one per seed) and seed 0..seeds-1.

    Runs live in ``out/NAME/ARM/seed-S``; the ``views`` experiment trains one net per seed in
    ``out/NAME/net/seed-S`` and evaluates it once per view. ``arms``: only these (the baseline
    arm among them, since every other arm is compared with it).
    """
    exp = get_experiment(name)
    if arms:
        known = [a.name for a in exp.arms]
        if unknown := [a for a in arms if a not in known]:
            raise UserError(f"{name} has no arm {', '.join(unknown)}; its arms: {', '.join(known)}")
        if exp.baseline not in arms:
            raise UserError(f"--arms must include {exp.baseline}, the arm {name} compares the others with")
        exp = replace(exp, arms=tuple(a for a in exp.arms if a.name in arms))
    if budget not in exp.budgets:
        raise UserError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    exp.threshold_for(data, budget, threshold)  # a --threshold this experiment cannot use: refused before any run
    b = exp.budgets[budget]
    recipe = exp.recipe.with_overrides(epochs=b.epochs)
    source = b.data(data)
    root = Path(out) / exp.name
    to_prepare = None
    if exp.prepared_size and not is_prepared(data):  # the budget's subset, prepared once at the paper's size
        to_prepare, source = source, str(prepared_folder(root, source, exp.prepared_size))
    trained = (Arm("net"),) if exp.kind == "views" else exp.arms
    runs = []
    for arm in trained:
        for seed in range(seeds):
            cfg = TrainConfig(
                data=source, recipe=recipe.with_overrides(**dict(arm.recipe)), out=str(root / arm.name / f"seed-{seed}"),
                seed=seed, device=device, precision=precision, progress=progress,
                workers=default_workers() if exp.prepared_size else 0,  # JPEG decoding threads; none in memory
                model_options=dict(arm.model_options),
            )  # fmt: skip
            runs.append(PlannedRun(arm.name, seed, cfg))
    return Plan(exp, data, tuple(range(seeds)), budget, b, root, tuple(runs), threshold, to_prepare)
