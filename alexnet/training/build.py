"""A run's live objects, built once on each process from its :class:`TrainConfig`: the data,
the model (warm-started, with section 5's init where SGD is stable with it), the learning rate
its policy settles on, the optimizer, the schedule and the input pipeline."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet import models
from alexnet.checkpoint import stored_model_options
from alexnet.data import BatchPlan, open_dataset
from alexnet.data.dataset import MIN_CLASSES, Dataset
from alexnet.data.pipeline import InputPipeline
from alexnet.errors import UserError
from alexnet.precision import Choice, choose
from alexnet.runfolder import checkpoints_dir, read_config
from alexnet.runtime import fast_sgd_options
from alexnet.training import warmstart
from alexnet.training.config import TrainConfig
from alexnet.training.distributed import DistContext, all_reduce_sum_, data_parallel, gather_objects
from alexnet.training.health import ChanceWatch, DeadStartWatch, output_curvature, stable_lr
from alexnet.training.loop import train_step
from alexnet.training.lr_finder import auto_lr, step_scaled_recipe, training_batches
from alexnet.training.recipes import Recipe
from alexnet.training.records import log, training_flops_per_image
from alexnet.training.schedule import make_scheduler


@dataclass
class LiveRun:
    """The live objects of a run, built once by :func:`build_run`."""

    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    precision: str
    dataset: Dataset
    model: nn.Module  # the bare model (checkpoints hold its state_dict)
    net: nn.Module  # what the steps call: the model, wrapped in DDP and/or compiled
    model_options: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    pipeline: InputPipeline
    lr: float
    global_batch: int
    steps_per_epoch: int
    flops_per_image: float  # training FLOPs (forward + backward) of one image
    watch: ChanceWatch  # the chance-level loss warning (training/health.py)
    dead_watch: DeadStartWatch  # dead layers in the first hundred steps (training/health.py)
    warm_start: dict[str, str] = field(default_factory=dict)  # what --init-from adapted (config.json)
    choice: Choice | None = None  # why this precision and layout (config.json, the log)

    @property
    def ckpt_dir(self) -> Path:
        return checkpoints_dir(self.cfg.out)

    @property
    def reduce_sum(self) -> Any:
        return functools.partial(all_reduce_sum_, ctx=self.ctx) if self.ctx.enabled else None


def build_run(cfg: TrainConfig, ctx: DistContext, device: torch.device, resume_from: Path | None) -> LiveRun:
    """Data, model, optimizer, schedule and input pipeline of ``cfg`` on this process (``resume_from``:
    the checkpoint a resumed run continues from, whose weights and recipe win over the warm-start hooks)."""
    recipe, say = cfg.recipe, log if ctx.is_main else None
    choice = runtime_choice(cfg, ctx, device, resume_from)
    torch.manual_seed(cfg.seed)  # model init, identical on every rank; data randomness is keyed
    dataset = _training_data(cfg, device)
    # --init-from: the data fitted to the weights' input size before the model takes its size from it.
    warm = warmstart.prepare(cfg.init_from, recipe.model, dataset, cfg.data, resume_from, say)
    dataset = warm.dataset if warm is not None else dataset
    model_options = model_options_of(recipe, dataset, cfg.model_options)
    if resume_from is not None:  # options whose default changed since (models.LEGACY_DEFAULTS): as trained
        stored = stored_model_options(resume_from)
        model_options |= {k: stored[k] for k, _ in models.LEGACY_DEFAULTS.get(recipe.model, ()) if k in stored}
    model = models.create(recipe.model, dataset.info.num_classes, **model_options)
    # --init-from / --freeze (training/warmstart.py); the weights' input norm.
    warm_norm = warmstart.start(model, warm, cfg.freeze, cfg.init_norm, cfg.pretrained_lr_scale, say)
    memory_format = torch.channels_last if choice.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    pipeline = InputPipeline(dataset, device, choice.channels_last, cfg.seed, norm=warm_norm, normalize=recipe.normalize,
                             pca=recipe.pca_lighting, pca_std=recipe.pca_std)  # fmt: skip
    plan0 = epoch_plan(cfg, ctx, 0)  # epoch 0: the step count, and the range test's batches
    first = functools.partial(training_batches, dataset, pipeline, plan0, device)
    fresh = resume_from is None
    if recipe.init in ("auto", "paper") and fresh and warm is None:  # section 5's init, if SGD is stable with it
        init, note = settle_init(recipe, model, next(first())[0])
        if say and note:
            say(note)
        if init != model_options["init"]:  # rebuilt from the same seed: the run is exactly `--init {init}`'s
            torch.manual_seed(cfg.seed)
            model_options["init"] = init
            model = models.create(recipe.model, dataset.info.num_classes, **model_options).to(device, memory_format=memory_format)
        cfg = dataclasses.replace(cfg, recipe=recipe.with_overrides(init=init))
    if fresh:
        train_images = dataset.num_samples("train")
        cfg = _settle_lr(cfg, model, first, recipe.epochs * plan0.steps(train_images), warm, choice.precision, device, ctx)
    return _assemble(cfg, ctx, device, choice, dataset, model, model_options, pipeline, plan0, warm)


def _training_data(cfg: TrainConfig, device: torch.device) -> Dataset:
    """The dataset of ``cfg``, checked for training: two classes or more, validation images."""
    dataset = open_dataset(cfg.data, workers=cfg.workers)
    if dataset.info.num_classes < MIN_CLASSES:  # one class: a classifier with nothing to tell apart
        raise UserError(f"{cfg.data} has {dataset.info.num_classes} class; training needs at least {MIN_CLASSES}")
    if cfg.gpu_decode:
        if device.type != "cuda" or not hasattr(dataset, "decode_device"):
            raise UserError("--gpu-decode needs --device cuda and a prepared dataset")
        dataset.decode_device = "cuda"
    if cfg.recipe.crop_pad >= 0:  # the recipe overrides the dataset's translation range
        dataset.train_augment = dataclasses.replace(dataset.train_augment, pad=cfg.recipe.crop_pad)
    if dataset.num_samples("val") == 0:
        raise UserError(f"{cfg.data} has no validation images; training reports (and the plateau schedule "
                        "follows) the validation error: prepare it with a val split (e.g. --val-fraction 0.1)")  # fmt: skip
    return dataset


def _settle_lr(
    cfg: TrainConfig, model: nn.Module, batches: Any, steps: int, warm: warmstart.WarmStart | None, precision: str,
    device: torch.device, ctx: DistContext,
) -> TrainConfig:
    """``cfg`` with the lr its ``lr_policy`` settles on at a fresh start (``steps``: the run's step count)."""
    recipe, say = cfg.recipe, log if ctx.is_main else None
    if cfg.lr_policy == "steps" and warm is not None and warmstart.linear_probe(cfg.freeze):
        if say:
            say(warmstart.probe_lr_note(recipe))
    elif cfg.lr_policy == "steps":  # the step-scaled default (training/lr_finder.py)
        cfg = dataclasses.replace(cfg, recipe=step_scaled_recipe(recipe, steps, say))
        recipe = cfg.recipe
    if cfg.lr_policy == "auto":  # --lr auto, the LR range test (training/lr_finder.py)
        found = auto_lr(model, lambda m: make_optimizer(m, recipe, recipe.lr, device), batches(),
                        lambda *a: train_step(*a, precision, recipe.label_smoothing), recipe.lr, Path(cfg.out), ctx, log)  # fmt: skip
        cfg = dataclasses.replace(cfg, recipe=recipe.with_overrides(lr=found))
    return cfg


def _assemble(
    cfg: TrainConfig, ctx: DistContext, device: torch.device, choice: Choice, dataset: Dataset, model: nn.Module,
    model_options: dict[str, Any], pipeline: InputPipeline, plan0: BatchPlan, warm: warmstart.WarmStart | None,
) -> LiveRun:
    """The optimizer, schedule and wrapped net around ``model``, with the run's settled recipe."""
    recipe = cfg.recipe
    # Linear scaling rule (Goyal et al. 2017), off by default: lr grows with the global batch.
    lr = recipe.lr * ctx.world_size if recipe.scale_lr else recipe.lr
    optimizer = make_optimizer(model, recipe, lr, device)
    if cfg.init_from:  # a lower lr for the pretrained layers (before the scheduler)
        warmstart.scale_pretrained_lr(optimizer, model, cfg.pretrained_lr_scale)
    global_batch = recipe.batch_size * ctx.world_size
    steps_per_epoch = plan0.steps(dataset.num_samples("train"))
    if steps_per_epoch == 0:
        raise UserError(f"global batch {global_batch} is larger than the training set ({dataset.num_samples('train')})")
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch, lr)
    net: nn.Module = data_parallel(model, device) if ctx.enabled else model
    if cfg.compile:
        net = torch.compile(net)
    flops = training_flops_per_image(model, dataset, device)
    watch = ChanceWatch(dataset.info.num_classes, recipe.epochs * steps_per_epoch, lr)  # the chance-level warning (training/health.py)
    return LiveRun(cfg, ctx, device, choice.precision, dataset, model, net, model_options, optimizer, scheduler, pipeline,
                   lr, global_batch, steps_per_epoch, flops, watch, DeadStartWatch(lr, recipe.init, recipe.schedule),
                   warm_start=warm.notes if warm is not None else {}, choice=choice)  # fmt: skip


def runtime_choice(cfg: TrainConfig, ctx: DistContext, device: torch.device, resume_from: Path | None) -> Choice:
    """The run's precision and memory layout (alexnet/precision.py): what ``cfg`` forces, else this
    machine's fastest. A resumed run keeps what it started with (another precision would break
    bit-exact resume), and under torchrun every rank takes rank 0's choice (each measures for
    itself, and a close call could fall either way)."""
    precision, channels_last = cfg.precision, cfg.channels_last
    if resume_from is not None:
        try:
            resolved = (read_config(cfg.out) or {}).get("resolved", {})
        except UserError:
            resolved = {}
        resolved = resolved if isinstance(resolved, dict) else {}
        if precision == "auto" and resolved.get("precision") in ("fp32", "bf16"):
            precision = resolved["precision"]
        if channels_last is None and isinstance(resolved.get("channels_last"), bool):
            channels_last = resolved["channels_last"]
    choice = choose(precision, channels_last, device, cfg.recipe.model)
    return gather_objects(choice, ctx)[0]


def epoch_plan(cfg: TrainConfig, ctx: DistContext, epoch: int, start_step: int = 0) -> BatchPlan:
    """The training batches of ``epoch``: a shuffle keyed by (seed, epoch), this rank's share."""
    return BatchPlan(cfg.recipe.batch_size * ctx.world_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                     start_step=start_step, rank=ctx.rank, world_size=ctx.world_size, drop_last=True)  # fmt: skip


def model_options_of(recipe: Recipe, dataset: Dataset, extra: dict[str, Any]) -> dict[str, Any]:
    """Model keyword options implied by the recipe and the data, plus the user's extras."""
    accepted = models.model_options(recipe.model)
    init = "paper" if recipe.init == "auto" else recipe.init  # auto: built as section 5 says, then checked
    options: dict[str, Any] = {"in_channels": dataset.info.channels, "init": init, "dropout": recipe.dropout}
    if "image_size" in accepted:
        options["image_size"] = dataset.eval_crop
    return options | extra


def settle_init(recipe: Recipe, model: nn.Module, images: torch.Tensor) -> tuple[str, str | None]:
    """The init a run with ``recipe.init`` ``auto`` or ``paper`` uses, and the line that says why.

    Section 5's init is kept where SGD at the recipe's lr is stable with it: at most half the
    limit :func:`~alexnet.training.health.stable_lr` sets by the output layer's curvature on the
    first batch (:func:`~alexnet.training.health.output_curvature`). Else ``auto`` takes Caffe's
    init, and ``paper`` (asked for by name) keeps it with a warning.
    """
    curvature = output_curvature(model, images)
    if curvature is None:  # no fc8 to measure (e.g. the four-layer net): as written
        return "paper", None
    limit = stable_lr(curvature, recipe.momentum)
    why = (f"the output layer's curvature on the first batch is {curvature:.4g}, so SGD with momentum "
           f"{recipe.momentum:g} diverges above lr {limit:.2g}")  # fmt: skip
    if recipe.lr <= limit / 2:
        return "paper", f"init: section 5's N(0, 0.01) with biases of 1 ({why}; the recipe's lr is {recipe.lr:g})"
    if recipe.init == "paper":
        return "paper", (f"warning: with section 5's init {why}, and the lr is {recipe.lr:g}: expect the loss to blow "
                         f"up in the first steps (--init caffe or --lr {limit / 2:.2g} avoids it)")  # fmt: skip
    return "caffe", (f"init: Caffe's (fc6/fc7 std 0.005, biases 0.1) instead of section 5's biases of 1, with which "
                     f"{why} and the recipe's lr is {recipe.lr:g}; --init paper forces it")  # fmt: skip


def make_optimizer(model: nn.Module, recipe: Recipe, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """SGD with momentum (section 5); biases and 1-d parameters decay only if the recipe says so."""
    decay = [p for p in model.parameters() if p.ndim > 1 or recipe.decay_biases]
    no_decay = [p for p in model.parameters() if not (p.ndim > 1 or recipe.decay_biases)]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    # Fused (one pass over weights, gradients and momentum) where the device has the kernel, else
    # foreach; both are deterministic, so resume stays bit-exact.
    return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                           **fast_sgd_options(device))  # fmt: skip
