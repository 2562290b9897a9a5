"""Learning curves as plans: ``data-scaling`` (error against images per class, 2011 systems
beside the network) and ``transfer`` (features learned on some classes reused on the others).

Every point is an ordinary run of a public command: ``alexnet baseline`` (a :class:`BaselineConfig`)
or ``alexnet train`` (a :class:`TrainConfig`), on a nested, class-balanced subset named in the
data source itself (``SOURCE@per-class=N,draw=S,val=M``, :mod:`alexnet.data.subset`): seed S
draws its own subsets, nested in N, and every N and system is tested on the same test images.
:func:`train_command` and :func:`baseline_command` print the command that reproduces a point.

The network's recipe at N (:func:`network_recipe`): ``alexnet train``'s default (the ``small``
recipe: one-cycle SGD with Nesterov momentum, label smoothing 0.1, no dropout) with a batch of at
most 1/50 of the training set (32 images at least), the set repeated until an epoch holds
2,000 images and at least as many as one validation pass reads (``@repeat=K``: at 10,000 test
images a validation pass costs about a third of an epoch's training, not five times it), and at
least ``epochs`` passes over the data (a repeated epoch is K of them) and ``min_steps`` optimizer
steps. A fixed epoch count would give 10
images per class 1-2 steps per epoch and measure the optimizer's budget, not the data; with the
floor every size gets at least that many updates. The rate is the recipe's 0.1 per batch of 128
scaled linearly to the batch (Goyal et al. 2017), then by the project's step-scaled rule
(:func:`~alexnet.training.lr_finder.step_scaled_lr`: x (steps / 1,872) ** 0.5 for shorter runs),
as ``alexnet train`` applies it by default. The ablations' recipe (dropout 0.5
at a fifth of the rate) was not used: it sits near chance for hundreds of small-batch steps
(docs/usage.md, the learning curves).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

from alexnet.baselines import DEFAULT_L2, BaselineConfig
from alexnet.baselines.svm import SvmParams
from alexnet.data.subset import SEPARATOR
from alexnet.errors import UserError
from alexnet.training.lr_finder import step_scaled_lr
from alexnet.training.recipes import SMALL, Recipe
from alexnet.training.trainer import TrainConfig

NETWORK = "alexnet-small"
HAND_CRAFTED = ("hog", "hog-rbf", "sift-fv")
SCALING_SYSTEMS = (*HAND_CRAFTED, NETWORK)
# transfer: the network from scratch, the project's linear SVM on the source net's frozen fc7
# (`alexnet probe SOURCE --layers fc7`), fine-tuning all layers (`--init-from`), HOG + linear SVM
TRANSFER_SYSTEMS = ("scratch", "frozen-fc7", "fine-tune", "hog")
TRAINED = (NETWORK, "scratch", "frozen-fc7", "fine-tune")
TRANSFER_SOURCE, TRANSFER_TARGET = (0, 4), (5, 9)  # Fashion-MNIST classes: learn on 0-4, reuse on 5-9
MAX_BATCH = SMALL.batch_size
# The network's batch is at most 1/50 of the training set (at least MIN_BATCH): small sets take
# many small steps rather than many epochs, whose per-epoch validation would dominate the cost.
IMAGES_PER_BATCH = 50
MIN_BATCH = 32
# A smaller training set is repeated (``@repeat=K``) until an epoch has at least this many images
# (and at least the validation pass's images): one validation pass per 2,000 training images, not
# one per pass over 100 images.
EPOCH_IMAGES = 2000


@dataclass(frozen=True)
class CurveBudget:
    """One budget of a curve experiment: the sizes (images per class; ``None`` = the whole split),
    default systems and seeds, the test images (``None`` = the whole test split), the network's
    epochs at the largest sizes and its floor on optimizer steps, and (transfer) the source net's
    images per class."""

    sizes: tuple[int | None, ...]
    systems: tuple[str, ...]
    seeds: int
    val: int | None
    epochs: int
    min_steps: int
    source_per_class: int | None = None

    def describe(self, sizes: tuple[int | None, ...] | None = None) -> str:
        """One line of what the budget runs, with the ``sizes`` actually run (``--sizes``) if given."""
        test = f"{self.val:,} test images" if self.val else "the whole test split"
        src = "" if self.source_per_class is None else f", source net on {self.source_per_class:,} images/class"
        return (f"sizes {', '.join(size_name(n) for n in sizes or self.sizes)} per class, {test}, network >= {self.epochs} "
                f"epochs and >= {self.min_steps} steps{src}")  # fmt: skip


# quick: <= 10 minutes on 2 idle cores (docs/RESULTS.md has the measured time); full: the setting to report.
CURVE_BUDGETS: dict[str, dict[str, CurveBudget]] = {
    "data-scaling": {
        "quick": CurveBudget((10, 30, 100, 300), ("hog", "hog-rbf", NETWORK), 3, 2000, 2, 500),
        "full": CurveBudget((10, 30, 100, 300, 1000, 3000, None), SCALING_SYSTEMS, 3, None, 15, 3000),
    },
    "transfer": {
        "quick": CurveBudget((10, 30, 100), TRANSFER_SYSTEMS, 3, 2000, 2, 500, source_per_class=1000),
        "full": CurveBudget((10, 30, 100, 300, 1000, None), TRANSFER_SYSTEMS, 3, None, 15, 3000),
    },
}
CURVE_EXPERIMENTS = tuple(CURVE_BUDGETS)


def size_name(n: int | None) -> str:
    return "all" if n is None else str(n)


def parse_sizes(text: str) -> tuple[int | None, ...]:
    """``10,30,100,all`` as sizes (``all`` = ``None``), ascending; a :class:`UserError` if malformed."""
    sizes: list[int | None] = []
    for item in text.split(","):
        if item == "all":
            sizes.append(None)
        elif item.isdigit() and int(item) >= 1:
            sizes.append(int(item))
        else:
            raise UserError(
                f"bad --sizes item {item!r}; give images per class as whole numbers >= 1 or all, e.g. 10,100,all"
            )
    if len(set(sizes)) != len(sizes):
        raise UserError(f"--sizes lists a size twice: {text}")
    return tuple(sorted(sizes, key=lambda n: math.inf if n is None else n))


def parse_systems(text: str, experiment: str) -> tuple[str, ...]:
    """``hog,alexnet-small`` as systems of ``experiment``; a :class:`UserError` naming the choices."""
    known = SCALING_SYSTEMS if experiment == "data-scaling" else TRANSFER_SYSTEMS
    systems = tuple(s for s in text.split(",") if s)
    if not systems or (unknown := [s for s in systems if s not in known]):
        raise UserError(
            f"unknown --systems {', '.join(unknown) if systems else '(none)'} for {experiment}; choose from {','.join(known)}"
        )
    return systems


@dataclass(frozen=True)
class ProbeSpec:
    """A linear SVM on ``layer`` of the trained network ``run``, fitted on all of ``data``'s
    training images and scored on its test images (``alexnet probe``)."""

    run: str
    data: str
    layer: str = "fc7"
    device: str = "auto"
    precision: str = "auto"
    max_iter: int = SvmParams.max_iter  # pinned: the baselines' L-BFGS iterations, not the probe command's default

    def command(self) -> str:
        return shlex.join(["alexnet", "probe", self.run, "--data", self.data, "--layers", self.layer,
                           "--train-images", "0", "--max-iter", str(self.max_iter), "--json"])  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One run of a curve: ``system`` at ``n`` images per class, seed ``seed``; exactly one of
    ``train`` / ``baseline`` / ``probe`` is set. ``needs``: the run folder it starts from (transfer)."""

    system: str
    n: int | None
    seed: int
    folder: Path
    train: TrainConfig | None = None
    baseline: BaselineConfig | None = None
    needs: Path | None = None
    probe: ProbeSpec | None = None

    def command(self) -> str:
        if self.probe is not None:
            return self.probe.command()
        return train_command(self.train) if self.train is not None else baseline_command(self.baseline, self.folder)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CurvePlan:
    """A curve experiment resolved: its source runs (transfer), then its points."""

    name: str
    data: str
    budget_name: str
    budget: CurveBudget
    sizes: tuple[int | None, ...]
    systems: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    sources: tuple[Point, ...]
    points: tuple[Point, ...]
    all_size: int  # images per class that "all" stands for (curves and fits need a number)

    def numeric(self, n: int | None) -> int:
        return self.all_size if n is None else min(n, self.all_size)


def subset_source(data: str, n: int | None, draw: int, val: int | None, classes: tuple[int, int] | None = None) -> str:
    """``data`` cut to ``classes``, ``n`` images per class of draw ``draw`` and ``val`` test images."""
    parts = [f"classes={classes[0]}-{classes[1]}"] if classes else []
    parts += [f"per-class={n}", f"draw={draw}"] if n is not None else []
    parts += [f"val={val}"] if val is not None else []
    return f"{data}{SEPARATOR}{','.join(parts)}" if parts else data


def network_recipe(train_images: int, epochs: int, min_steps: int, base: Recipe = SMALL,
                   val_images: int = 0) -> tuple[Recipe, int]:  # fmt: skip
    """``base`` adapted to a training set of ``train_images`` validated on ``val_images`` per
    epoch, and how many times over the set is repeated per epoch (``repeat=K``; the rule of the
    module docstring)."""
    batch = MAX_BATCH
    while batch > MIN_BATCH and batch * IMAGES_PER_BATCH > train_images:
        batch //= 2
    while batch > train_images:  # fewer images than MIN_BATCH (tiny tests)
        batch //= 2
    repeat = max(1, math.ceil(max(EPOCH_IMAGES, val_images) / train_images))
    steps_per_epoch = train_images * repeat // batch
    # ``epochs`` counts passes over the data: a repeated epoch is ``repeat`` of them already
    epochs = max(math.ceil(epochs / repeat), math.ceil(min_steps / steps_per_epoch))
    # The recipe's rate is for its own batch; a smaller batch takes proportionally less (Goyal et
    # al. 2017's linear rule): at 4x the per-image rate, batch 32 collapsed to chance in 1 of 3 seeds.
    lr = step_scaled_lr(base.lr * batch / base.batch_size, base.lr_reference_steps, epochs * steps_per_epoch)
    return base.with_overrides(
        batch_size=batch, epochs=epochs, lr=float(f"{lr:.3g}")
    ), repeat  # 3 digits: readable commands


def _train_point(system: str, n: int | None, seed: int, data: str, images: tuple[int, int], budget: CurveBudget,
                 folder: Path, runtime: dict[str, object], **warm: object) -> Point:  # fmt: skip
    """The network point; ``images``: its training and validation images."""
    recipe, repeat = network_recipe(images[0], budget.epochs, budget.min_steps, val_images=images[1])
    if repeat > 1:
        data += f"{',' if SEPARATOR in data else SEPARATOR}repeat={repeat}"
    cfg = TrainConfig(data=data, recipe=recipe, out=str(folder), seed=seed, workers=0, **runtime, **warm)  # type: ignore[arg-type]
    return Point(system, n, seed, folder, train=cfg, needs=Path(str(warm["init_from"])) if warm else None)


def make_curve_plan(name: str, data: str, budget_name: str = "quick", out: str | Path = "runs/experiments",
                    sizes: tuple[int | None, ...] | None = None, systems: tuple[str, ...] | None = None,
                    seeds: int | None = None, device: str = "auto", precision: str = "auto",
                    progress: bool = True) -> CurvePlan:  # fmt: skip
    """The runs of ``data-scaling`` or ``transfer`` (budget defaults where an option is ``None``)."""
    from alexnet.data import open_dataset

    if name not in CURVE_BUDGETS:
        raise UserError(f"unknown curve experiment {name!r}; choose one of {', '.join(CURVE_BUDGETS)}")
    budget = CURVE_BUDGETS[name][budget_name]
    sizes, systems = sizes or budget.sizes, systems or budget.systems
    seeds_n = budget.seeds if seeds is None else seeds
    root, runtime = Path(out) / name, {"device": device, "precision": precision, "progress": progress}
    info = open_dataset(data)
    per_class = info.num_samples("train") // info.info.num_classes  # "all": the whole split (balanced in Fashion-MNIST)
    target = TRANSFER_TARGET if name == "transfer" else None
    if target and info.info.num_classes <= target[1]:
        raise UserError(f"transfer learns on classes 0-4 and reuses on 5-9; {data} has {info.info.num_classes} classes")
    classes = (target[1] - target[0] + 1) if target else info.info.num_classes

    def val_images(n_classes: int) -> int:  # one validation pass: the budget's count or the classes' share of the split
        return budget.val or info.num_samples("val") * n_classes // info.info.num_classes

    open_dataset(subset_source(data, sizes[0], 0, budget.val, target))  # a source that cannot be cut: one line now
    sources, points = [], []
    for seed in range(seeds_n):
        source_folder = root / "source" / f"seed-{seed}"
        if name == "transfer":
            src_data = subset_source(data, budget.source_per_class, seed, budget.val, TRANSFER_SOURCE)
            src_classes = TRANSFER_SOURCE[1] - TRANSFER_SOURCE[0] + 1
            src_images = ((budget.source_per_class or per_class) * src_classes, val_images(src_classes))
            sources.append(_train_point("source", budget.source_per_class, seed, src_data, src_images, budget,
                                        source_folder, runtime))  # fmt: skip
        for n in sizes:
            point_data = subset_source(data, n, seed, budget.val, target)
            images = ((n or per_class) * classes, val_images(classes))
            for system in systems:
                folder = root / system / f"n-{size_name(n)}" / f"seed-{seed}"
                if system in HAND_CRAFTED:
                    cfg = BaselineConfig(data=point_data, features=system, seed=seed, l2=DEFAULT_L2[system])
                    points.append(Point(system, n, seed, folder, baseline=cfg))
                elif system == "frozen-fc7":
                    spec = ProbeSpec(str(source_folder), point_data, device=device, precision=precision)
                    points.append(Point(system, n, seed, folder, probe=spec, needs=source_folder))
                elif system == "fine-tune":
                    points.append(_train_point(system, n, seed, point_data, images, budget, folder, runtime,
                                               init_from=str(source_folder)))  # fmt: skip
                else:  # the network from scratch
                    points.append(_train_point(system, n, seed, point_data, images, budget, folder, runtime))
    return CurvePlan(name, data, budget_name, budget, tuple(sizes), tuple(systems), tuple(range(seeds_n)), root,
                     tuple(sources), tuple(points), per_class)  # fmt: skip


def train_command(cfg: TrainConfig) -> str:
    """The ``alexnet train`` command line that trains ``cfg`` (every recipe field that differs
    from the ``small`` recipe, the lr given so that it is used as is)."""
    args = ["alexnet", "train", "--data", cfg.data, "--seed", str(cfg.seed), "--out", cfg.out]
    for f in fields(Recipe):
        value = getattr(cfg.recipe, f.name)
        if f.name != "name" and (value != getattr(SMALL, f.name) or f.name == "lr"):
            args += [f"--{f.name.replace('_', '-')}", _flag_value(value)]
    for key, value in cfg.model_options.items():
        args += [f"--{key.replace('_', '-')}", _flag_value(value)]
    if cfg.init_from:
        args += ["--init-from", cfg.init_from]
        if cfg.freeze != "none":
            args += ["--freeze", cfg.freeze]
    return shlex.join(args)


def baseline_command(cfg: BaselineConfig, out: Path) -> str:
    """The ``alexnet baseline`` command line that fits ``cfg`` into ``out``."""
    args = ["alexnet", "baseline", "--data", cfg.data, "--features", cfg.features, "--seed", str(cfg.seed),
            "--l2", f"{cfg.l2:g}", "--out", str(out)]  # fmt: skip
    return shlex.join(args)


def _flag_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
