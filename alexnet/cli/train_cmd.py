"""``alexnet train``: train a model on a data source with a recipe; resumable."""

from __future__ import annotations

import argparse
import os
import time
import typing

from alexnet.baselines import is_baseline_run
from alexnet.cli.common import add_runtime_options, int_list, parse_bool, positive_int
from alexnet.training.recipes import RECIPES, get_recipe, recipe_fields
from alexnet.training.trainer import NonFiniteLoss, TrainConfig, TrainingInterrupted, load_run_config, train

DATA_HELP = (
    "fashion-mnist[:DIR] | mnist:DIR | synthetic[:classes=10,size=32,train=2048,val=512] | "
    "a folder written by `alexnet prepare`"
)
# Model options settable from the command line (dropout and init come from the recipe).
MODEL_FLAGS = {
    "lrn": {"type": parse_bool, "help": "local response normalisation after conv1/conv2 (default true)"},
    "lrn_convention": {"choices": ("code", "paper"), "help": "LRN alpha: 'code' = alpha/n (authors' code, PyTorch; default), 'paper' = as printed"},
    "lrn_k": {"type": float, "help": "LRN additive constant (paper 2, Caffe 1)"},
    "activation": {"choices": ("relu", "tanh"), "help": "nonlinearity (default relu)"},
    "pooling": {"choices": ("overlapping", "non-overlapping"), "help": "max-pool 3/2 (default) or 2/2"},
    "towers": {"type": int, "choices": (1, 2), "help": "2 = grouped convs as the two GPUs (default); 1 = one tower, half the kernels"},
    "widths": {"type": int_list, "metavar": "C1,C2,C3,C4,C5", "help": "the five conv widths (even numbers; default the model's)"},
    "fc_width": {"type": positive_int, "help": "width of fc6/fc7 (default the model's: 4096 paper, 1024 small)"},
}  # fmt: skip


RECIPE_HELP = {
    "model": "alexnet | alexnet-owt | alexnet-small",
    "batch_size": "images per process per step (global batch = this x processes)",
    "lr": "learning rate (peak for onecycle)",
    "schedule": "plateau | onecycle | cosine | constant",
    "init": "paper | caffe | kaiming | torchvision",
    "dropout": "drop probability in fc6/fc7 (0 = off)",
    "normalize": "mean-image (paper) | channel",
    "crop_pad": "zero padding (px) before random crops of small images; -1 = the dataset's default",
    "pca_lighting": "PCA colour noise: paper | std | off",
    "scale_lr": "true: lr x number of processes (linear scaling rule)",
    "eval_views": "validation patches per image: centre | flip (centre + mirror) | ten-crop (section 4.1)",
}


def _field_type(f: typing.Any) -> typing.Callable[[str], typing.Any]:
    t = f.type if not isinstance(f.type, str) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    return parse_bool if t is bool else t


def add_recipe_overrides(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per recipe field (except ``skip``), read by :func:`recipe_overrides`."""
    group = p.add_argument_group("recipe overrides (default: the recipe's value; see alexnet/training/recipes.py)")
    for f in recipe_fields():
        if f.name not in skip:
            group.add_argument("--" + f.name.replace("_", "-"), dest=f"recipe_{f.name}", type=_field_type(f),
                               metavar=f.name.upper(), default=None, help=RECIPE_HELP.get(f.name))  # fmt: skip


def recipe_overrides(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The recipe fields given on the command line."""
    return _overrides(args, "recipe_")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (resumable)", description=__doc__)
    p.add_argument("--data", help=f"data source: {DATA_HELP}")
    p.add_argument("--recipe", default=None, choices=list(RECIPES), help="hyperparameter recipe (default: small; see README)")
    p.add_argument("--out", help="run folder (default runs/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN exactly where its last checkpoint left off")
    add_seed_option(p)
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="STEPS", help="also checkpoint every STEPS steps")
    add_runtime_options(p, default=None)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC memory layout (default on)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; slower to start)")
    p.add_argument("--workers", type=int, default=None, help="JPEG decoding threads for prepared datasets (default: cores, at most 8)")
    p.add_argument("--gpu-decode", action="store_true", help="decode prepared JPEGs on the GPU (CUDA, torchvision's batched decode)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines only)")
    add_recipe_overrides(p)
    add_model_options(p)
    p.set_defaults(func=run)


def add_seed_option(p: argparse.ArgumentParser) -> None:
    """``--seed`` (shared by ``train`` and ``demo``)."""
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order, augmentation, dropout (default 0)")


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


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The run's config, and whether it resumes an existing run."""
    from alexnet.errors import UserError

    recipe_over, model_over = recipe_overrides(args), model_overrides(args)
    # Runtime settings: given flags win; on --resume the rest come from the saved run.
    runtime: dict[str, typing.Any] = {"progress": not args.no_progress}
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
    if args.workers is not None:
        runtime["workers"] = args.workers
    elif not args.resume:  # prepared datasets decode JPEGs: one process per core by default
        runtime["workers"] = min(os.cpu_count() or 1, 8)
    if args.resume:
        if is_baseline_run(args.resume):
            raise UserError(f"{args.resume} is a baseline run (alexnet baseline), not a network; re-run alexnet baseline --out {args.resume}")
        changed = [k for k in ("data", "recipe", "out") if getattr(args, k)] + [k for k in recipe_over if k != "epochs"]
        changed += list(model_over)
        if changed:
            raise UserError(f"--resume continues the saved run exactly; drop {', '.join('--' + c.replace('_', '-') for c in changed)}")
        saved = load_run_config(args.resume)
        recipe = saved.recipe.with_overrides(epochs=recipe_over.get("epochs"))
        return TrainConfig(**(saved.to_dict() | runtime | {"recipe": recipe, "out": args.resume})), True
    if not args.data:
        raise UserError("--data is required (e.g. --data fashion-mnist), or --resume RUN")
    recipe = get_recipe(args.recipe or "small").with_overrides(**recipe_over)
    out = args.out or f"runs/{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return TrainConfig(data=args.data, recipe=recipe, out=out, seed=args.seed, model_options=model_over, **runtime), False


def run(args: argparse.Namespace) -> int:
    cfg, resume = config_from_args(args)
    return run_training(cfg, resume)


def run_training(cfg: TrainConfig, resume: bool) -> int:
    """Train and turn the expected ways of stopping into one line and an exit code."""
    import sys

    try:
        last = train(cfg, resume=resume)
    except TrainingInterrupted as e:
        print(f"alexnet: {e}; resume with: alexnet train --resume {cfg.out}", file=sys.stderr)
        return 128 + e.signum
    except NonFiniteLoss as e:
        print(f"alexnet: error: {e}; stopped, the last good checkpoint is kept in {cfg.out}/checkpoints "
              "(try a lower --lr)", file=sys.stderr)  # fmt: skip
        return 1
    if last:
        print(f"done: {cfg.out}  val top-1 err {last['val_top1_err']:.2%}  top-5 err {last['val_top5_err']:.2%}")
    return 0
