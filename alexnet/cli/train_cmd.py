"""``alexnet train``: train a model on a data source with a recipe; resumable."""

from __future__ import annotations

import argparse
import math
import sys
import time
import typing
from pathlib import Path

from alexnet.baselines import is_baseline_run
from alexnet.cli.common import (
    add_runtime_options,
    finite_float,
    int_list,
    non_negative_int,
    parse_bool,
    positive_int,
    show_progress,
)
from alexnet.data.presets import PCA_MODES
from alexnet.errors import UserError
from alexnet.models import available
from alexnet.models.init import INIT_SCHEMES
from alexnet.runfolder import last_checkpoint
from alexnet.runtime import default_workers
from alexnet.training.config import DEFAULT_KEEP_CHECKPOINTS, TrainConfig
from alexnet.training.recipes import EVAL_VIEW_NAMES, NORMALIZATIONS, RECIPES, SCHEDULES, get_recipe, recipe_fields
from alexnet.training.resume import find_resume_point
from alexnet.training.signals import TrainingInterrupted
from alexnet.training.trainer import NonFiniteLoss, train

DATA_HELP = (
    "fashion-mnist[:DIR] | mnist:DIR | synthetic[:classes=10,size=32,train=2048,val=512] | "
    "a folder written by `alexnet prepare`"
)


def model_option_choices(option: str) -> tuple[typing.Any, ...] | None:
    """The values a model option's type allows (its ``Literal[...]`` annotation in the model
    class), so the CLI offers exactly what the models accept; None for open types."""
    from alexnet import models

    for entry in models.MODELS.values():
        target = getattr(entry.build, "func", entry.build)  # registry entries may be partials
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
        if option in hints and typing.get_origin(hints[option]) is typing.Literal:
            return typing.get_args(hints[option])
    return None


# Model options settable from the command line (dropout and init come from the recipe).
MODEL_FLAGS = {
    "lrn": {"type": parse_bool, "help": "local response normalisation after conv1/conv2 (default true)"},
    "lrn_convention": {"choices": model_option_choices("lrn_convention"), "help": "LRN alpha: 'code' = alpha/n (authors' code, PyTorch; default), 'paper' = as printed"},
    "lrn_k": {"type": float, "help": "LRN additive constant (paper 2, Caffe 1)"},
    "lrn_order": {"choices": model_option_choices("lrn_order"), "help": "layers 1-2: 'norm-pool' = LRN then max-pool (the paper, bvlc_alexnet; default), 'pool-norm' = pool then LRN (CaffeNet)"},
    "lrn_scope": {"choices": model_option_choices("lrn_scope"), "help": "two towers: 'tower' = each tower normalises its own maps (the paper's GPUs; default for alexnet), 'all' = LRN windows cross the tower boundary (Caffe; default for alexnet-small)"},
    "activation": {"choices": model_option_choices("activation"), "help": "nonlinearity (default relu)"},
    "pooling": {"choices": model_option_choices("pooling"), "help": "max-pool 3/2 (default) or 2/2"},
    "towers": {"type": int, "choices": (1, 2), "help": "2 = grouped convs as the two GPUs (default); 1 = one tower, half the kernels"},
    "widths": {"type": int_list, "metavar": "C1,C2,C3,C4,C5", "help": "the five conv widths (even numbers; default the model's)"},
    "fc_width": {"type": positive_int, "help": "width of fc6/fc7 (default the model's: 4096 paper, 1024 small)"},
    "towers_on": {"metavar": "DEV0,DEV1", "help": "the paper's model parallelism (section 3.2): tower 1 on DEV0, tower 2 on DEV1, e.g. cuda:0,cuda:1 (same weights and results as the grouped net; for fidelity, not speed)"},
}  # fmt: skip


RECIPE_HELP = {
    "model": " | ".join(available()),
    "batch_size": "images per process per step (global batch = this x processes)",
    "lr": "learning rate (peak for onecycle); default: the recipe's, x (steps / lr-reference-steps)^0.5 for shorter "
          "runs; 'auto': an LR range test picks it (at most the recipe's)",
    "lr_reference_steps": "run length the recipe's lr was tuned for (small: 1872); shorter runs get a lower default lr; 0 = off",
    "schedule": " | ".join(SCHEDULES),
    "init": " | ".join((*INIT_SCHEMES, "auto")) + " (auto: section 5's where SGD is stable with it, else caffe)",
    "dropout": "drop probability in fc6/fc7 (0 = off)",
    "normalize": " | ".join(NORMALIZATIONS) + " (mean-image: the paper's)",
    "crop_pad": "zero padding (px) before random crops of small images; -1 = the dataset's default",
    "pca_lighting": "PCA colour noise: " + " | ".join(PCA_MODES),
    "scale_lr": "true: lr x number of processes (linear scaling rule)",
    "eval_views": "validation patches per image: " + " | ".join(EVAL_VIEW_NAMES) + " (flip: centre + mirror; ten-crop: section 4.1)",
}


def _lr_or_auto(text: str) -> float | str:
    """``--lr``: a positive finite number, or ``auto`` (the range test of training/lr_finder.py)."""
    if text == "auto":
        return "auto"
    try:
        value = finite_float(text)
    except argparse.ArgumentTypeError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"lr must be > 0 and finite, or auto; got {text!r}")
    return value


def _field_type(f: typing.Any) -> typing.Callable[[str], typing.Any]:
    if f.name == "lr":  # --lr auto
        return _lr_or_auto
    t = f.type if not isinstance(f.type, str) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    return parse_bool if t is bool else finite_float if t is float else t


def add_recipe_overrides(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per recipe field (except ``skip``), read by :func:`recipe_overrides`."""
    group = p.add_argument_group("recipe overrides (default: the recipe's value; see alexnet/training/recipes.py)")
    for f in recipe_fields():
        if f.name not in skip:
            group.add_argument("--" + f.name.replace("_", "-"), dest=f"recipe_{f.name}", type=_field_type(f),
                               metavar=f.name.upper(), default=None, help=RECIPE_HELP.get(f.name))  # fmt: skip


def recipe_overrides(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The recipe fields given on the command line (``--lr auto`` is not one: see :func:`lr_auto`)."""
    return {k: v for k, v in _overrides(args, "recipe_").items() if v != "auto"}


def lr_auto(args: argparse.Namespace) -> bool:
    """Whether ``--lr auto`` was given."""
    return getattr(args, "recipe_lr", None) == "auto"


def lr_policy(args: argparse.Namespace, recipe_over: dict[str, typing.Any]) -> str:
    """``auto`` for --lr auto, ``fixed`` for a given --lr, else ``steps`` (the recipe's
    rate scaled to the run's length, training/lr_finder.py)."""
    return "auto" if lr_auto(args) else "fixed" if "lr" in recipe_over else "steps"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (resumable)", description=__doc__)
    p.add_argument("--data", help=f"data source: {DATA_HELP}")
    p.add_argument("--recipe", default=None, choices=list(RECIPES), help="hyperparameter recipe (default: small; see docs/usage.md)")
    p.add_argument("--out", help="run folder (default runs/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN exactly where its last checkpoint left off "
                   "(or from RUN/checkpoints/FILE.pt when given that file)")  # fmt: skip
    p.add_argument("--resume-from-valid", action="store_true",
                   help="with --resume: if last.pt is damaged, continue from the newest valid step checkpoint")
    add_seed_option(p, default=None)
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="STEPS", help="also checkpoint every STEPS steps")
    p.add_argument("--keep-checkpoints", type=non_negative_int, default=None, metavar="N",
                   help=f"keep the newest N step checkpoints, delete older ones (default {DEFAULT_KEEP_CHECKPOINTS}; "
                   "each is a full copy of the model and optimizer)")  # fmt: skip
    add_runtime_options(p, default=None)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout (default: whichever trains faster on this machine, measured once and "
                        "cached; docs/performance.md)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; slower to start)")
    p.add_argument("--workers", type=int, default=None, help="JPEG decoding threads for prepared datasets (default: cores, at most 8)")
    p.add_argument("--gpu-decode", action="store_true", help="decode prepared JPEGs on the GPU (CUDA, torchvision's batched decode)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines only)")
    add_recipe_overrides(p)
    add_model_options(p)
    add_init_options(p)
    p.set_defaults(func=run)


def add_init_options(p: argparse.ArgumentParser) -> None:
    """Fine-tuning and linear probes from existing weights (training/warmstart.py)."""
    from alexnet.training.warmstart import FREEZE_CHOICES, INIT_NORMS

    group = p.add_argument_group("starting from pretrained weights")
    group.add_argument("--init-from", metavar="WEIGHTS",
                       help="an alexnet checkpoint or run folder (Caffe imports included), or torchvision's AlexNet "
                            "weights file (alexnet-owt); fc8 is replaced for the new classes, conv1 adapted between "
                            "grayscale and RGB, and the data cropped or resized to the weights' input size")  # fmt: skip
    group.add_argument("--freeze", choices=FREEZE_CHOICES, default=None,
                       help="keep pretrained layers fixed: conv (conv1-5) or features (all below fc8: a linear probe on fc7)")
    group.add_argument("--pretrained-lr-scale", type=finite_float, default=None, metavar="F",
                       help="lr multiplier of the pretrained layers (default 0.1; fc8 gets the full lr)")
    group.add_argument("--init-norm", choices=INIT_NORMS, default=None,
                       help="input normalisation: the weights' (default: torchvision's or the checkpoint's) or the data's")


def init_config(args: argparse.Namespace, recipe_over: dict[str, typing.Any], model_over: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """The TrainConfig fields of the --init-from group; the weights' model and architecture options
    are folded into ``recipe_over``/``model_over`` (the run is saved with them, so it resumes alone)."""
    from alexnet.errors import UserError
    from alexnet.training.warmstart import resolve_model

    given = {k: getattr(args, k) for k in ("freeze", "pretrained_lr_scale", "init_norm") if getattr(args, k) is not None}
    if not args.init_from:
        if given:
            raise UserError(f"--{next(iter(given)).replace('_', '-')} needs --init-from WEIGHTS")
        return {}
    if given.get("pretrained_lr_scale", 1.0) < 0:
        raise UserError("--pretrained-lr-scale must be >= 0")
    model, options = resolve_model(args.init_from, recipe_over.get("model"), model_over)
    recipe_over["model"] = model
    model_over.clear()
    model_over.update(options)
    return {"init_from": args.init_from, **given}


def add_seed_option(p: argparse.ArgumentParser, default: int | None = 0) -> None:
    """``--seed`` (shared by ``train`` and ``demo``; ``default=None`` lets ``--resume`` tell it was given)."""
    p.add_argument("--seed", type=int, default=default, help="seed of init, data order, augmentation, dropout (default 0)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """One ``--option`` per entry of :data:`MODEL_FLAGS`, read by :func:`model_overrides`."""
    group = p.add_argument_group("model options")
    for name, kwargs in MODEL_FLAGS.items():
        if "choices" not in kwargs:
            kwargs = {"metavar": name.upper(), **kwargs}
        group.add_argument("--" + name.replace("_", "-"), dest=f"model_{name}", default=None, **kwargs)


def model_overrides(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The model options given on the command line."""
    return _overrides(args, "model_")


def _overrides(args: argparse.Namespace, prefix: str) -> dict[str, typing.Any]:
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Path | None]:
    """The run's config, and the checkpoint it resumes from (None for a new run)."""
    recipe_over, model_over = recipe_overrides(args), model_overrides(args)
    warm = init_config(args, recipe_over, model_over) if not args.resume else {}  # --init-from
    # Runtime settings: given flags win; on --resume the rest come from the saved run.
    runtime: dict[str, typing.Any] = {"progress": show_progress(args)}
    for name in ("device", "precision"):
        if getattr(args, name) is not None:
            runtime[name] = getattr(args, name)
    if args.compile:
        runtime["compile"] = True
    if args.gpu_decode:
        runtime["gpu_decode"] = True
    if args.channels_last is not None:
        runtime["channels_last"] = args.channels_last
    if args.checkpoint_every is not None:
        runtime["checkpoint_every"] = args.checkpoint_every
    if args.keep_checkpoints is not None:
        runtime["keep_checkpoints"] = args.keep_checkpoints
    if args.workers is not None:
        runtime["workers"] = args.workers
    elif not args.resume:  # prepared datasets decode JPEGs: one thread per core by default
        runtime["workers"] = default_workers()
    if args.resume_from_valid and not args.resume:
        raise UserError("--resume-from-valid goes with --resume RUN")
    if args.resume:
        if is_baseline_run(args.resume):
            raise UserError(f"{args.resume} is a baseline run (alexnet baseline), not a network; resume it with its settings: "
                            f"alexnet baseline --data DATA --features FEATURES --out {args.resume}")  # fmt: skip
        changed = [k for k in ("data", "recipe", "out") if getattr(args, k)] + [k for k in recipe_over if k != "epochs"]
        changed += list(model_over) + (["seed"] if args.seed is not None else [])
        changed += [k for k in ("init_from", "freeze", "pretrained_lr_scale", "init_norm") if getattr(args, k)]
        changed += ["lr"] if lr_auto(args) else []
        if changed:
            raise UserError(f"--resume continues the saved run exactly; drop {', '.join('--' + c.replace('_', '-') for c in changed)}")
        point = find_resume_point(args.resume, fall_back=args.resume_from_valid)
        if point.note:
            print(f"alexnet: warning: {point.note}", file=sys.stderr)
        saved = point.config
        recipe = saved.recipe.with_overrides(epochs=recipe_over.get("epochs"))
        cfg = TrainConfig(**(saved.to_dict() | runtime | {"recipe": recipe, "out": str(point.run)}))
        return cfg, point.checkpoint
    if not args.data:
        raise UserError("--data is required (e.g. --data fashion-mnist), or --resume RUN")
    recipe = get_recipe(args.recipe or "small").with_overrides(**recipe_over)
    out = args.out or f"runs/{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    seed = 0 if args.seed is None else args.seed
    return TrainConfig(data=args.data, recipe=recipe, out=out, seed=seed, model_options=model_over,
                       lr_policy=lr_policy(args, recipe_over), **warm, **runtime), None  # fmt: skip


def run(args: argparse.Namespace) -> int:
    cfg, resume_from = config_from_args(args)
    return run_training(cfg, resume_from)


def run_training(cfg: TrainConfig, resume: Path | bool | None = None) -> int:
    """Train and turn the expected ways of stopping into one line and an exit code.

    ``resume``: the checkpoint to continue from (``True``: the run's last.pt), or None/False.
    """
    try:
        if resume is None or resume is False:
            last = train(cfg)
        else:
            last = train(cfg, resume=True, resume_from=None if resume is True else resume)
    except TrainingInterrupted as e:
        # On a terminal the ^C echo (or a bar) may sit on the current line: start a fresh one.
        fresh = "\n" if sys.stderr.isatty() else ""
        print(f"{fresh}alexnet: {e}; resume with: alexnet train --resume {cfg.out}", file=sys.stderr)
        return 128 + e.signum
    except NonFiniteLoss as e:
        kept = last_checkpoint(cfg.out).exists()
        where = (f"the last good checkpoint is kept in {cfg.out}/checkpoints" if kept
                 else "no checkpoint was written before it")  # fmt: skip
        print(f"alexnet: error: {e}; stopped, {where} (try a lower --lr)", file=sys.stderr)
        return 1
    if last:
        print(f"done: {cfg.out}  val top-1 err {last['val_top1_err']:.2%}  top-5 err {last['val_top5_err']:.2%}")
    return 0
