"""``alexnet train``: the run, from a :class:`TrainConfig` to a run folder, with exact resume.

Reading order: :class:`TrainConfig` (what to run), :func:`train` and :func:`_train` (the run
top to bottom: build, start or resume, then per epoch :func:`~alexnet.training.loop.train_one_epoch`,
:func:`~alexnet.evaluation.evaluate` and a checkpoint), then the helpers below them.
Everything random is either keyed by (seed, epoch, step) (data order, crops, flips) or lives
in the global torch RNG (dropout) whose state is saved in every checkpoint, so a run killed at
any step and resumed from its last checkpoint ends with bit-identical weights. The checkpoint
format is :mod:`alexnet.checkpoint`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from alexnet import __version__, models
from alexnet.checkpoint import (
    Checkpoint,
    DataSpec,
    Progress,
    newest_valid_checkpoint,
    prune_step_checkpoints,
    read_checkpoint,
    save_checkpoint,
    step_checkpoints,
    step_file_name,
    stored_model_options,
)
from alexnet.data import BatchPlan, open_dataset
from alexnet.data.dataset import MIN_CLASSES, Dataset
from alexnet.data.pipeline import InputPipeline
from alexnet.data.seeding import derive_seed
from alexnet.errors import UserError
from alexnet.evaluation.metrics import Meter, evaluate
from alexnet.precision import Choice, choose
from alexnet.runfolder import (
    BEST,
    CHECKPOINTS,
    FOREIGN_TO_TRAINING,
    LAST,
    checkpoints_dir,
    folder_contents,
    last_checkpoint,
    read_config,
    run_folder_lock,
    write_config,
    write_metrics,
)
from alexnet.runtime import (
    OtherLoad,
    busy_cores_warning,
    cpu_name,
    fast_sgd_options,
    resolve_device,
    tune_cpu_allocator,
)
from alexnet.training import warmstart
from alexnet.training.distributed import (
    DistContext,
    all_reduce_sum_,
    any_rank,
    data_parallel,
    gather_objects,
    init_from_env,
    shutdown,
)
from alexnet.training.health import ChanceWatch, DeadStartWatch, activation_report, output_curvature, stable_lr
from alexnet.training.loop import train_one_epoch, train_step
from alexnet.training.lr_finder import auto_lr, step_scaled_recipe, training_batches
from alexnet.training.recipes import Recipe, get_recipe
from alexnet.training.schedule import make_scheduler, scheduler_steps_per_batch, scheduler_steps_per_epoch

DEFAULT_KEEP_CHECKPOINTS = 2  # step checkpoints kept (each is a full copy once last.pt moves on)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run: data, recipe, where to write, and runtime settings.

    ``model_options`` are extra model keyword options (``lrn``, ``activation``, ...) on top of
    what the recipe and the dataset imply.
    """

    data: str
    recipe: Recipe
    out: str
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None: this machine's faster layout (alexnet/precision.py)
    compile: bool = False
    workers: int = 0  # decoding threads for prepared datasets; 0 = in the training thread
    gpu_decode: bool = False  # prepared JPEGs decoded on the GPU (CUDA only)
    checkpoint_every: int = 0
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS  # newest step checkpoints kept; older ones deleted
    eval_batch_size: int = 500
    progress: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)
    # Own images: the LR range test, and starting from pretrained weights.
    # fixed: recipe.lr; auto: the LR range test's choice (at most recipe.lr); steps: recipe.lr
    # scaled to the run's step count (the `alexnet train` default; see training/lr_finder.py)
    lr_policy: str = "fixed"
    init_from: str | None = None  # alexnet checkpoint / run folder, or a torchvision AlexNet state_dict
    freeze: str = "none"  # one of warmstart.FROZEN_LAYERS
    pretrained_lr_scale: float = 0.1  # lr multiplier of the pretrained layers (with init_from)
    init_norm: str = "weights"  # input normalisation with init_from: the weights' or the data's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        recipe_fields = dict(d.pop("recipe"))
        recipe = get_recipe(recipe_fields["name"]).with_overrides(**recipe_fields)
        return cls(recipe=recipe, **d)


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved to {checkpoint}")


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite; no checkpoint is replaced by a diverged one."""


def train(
    cfg: TrainConfig, resume: bool = False, resume_from: str | Path | None = None, lock_held: bool = False
) -> dict[str, Any]:
    """Train (or resume) the run in ``cfg.out``; returns the last epoch's metrics.

    ``resume_from``: the checkpoint to continue from (default the run's ``checkpoints/last.pt``).
    ``lock_held``: the caller holds the run folder's lock (:func:`~alexnet.runfolder.run_folder_lock`),
    having decided under it whether to start or resume (``alexnet experiment``).
    Under ``torchrun`` every process runs this function: data-parallel (DDP), ``recipe.batch_size``
    images per process, rank 0 alone writing the run folder.
    """
    tune_cpu_allocator()
    ctx, device = init_from_env(resolve_device(cfg.device))
    try:  # one writer per run folder: rank 0 holds the lock, every rank learns if it failed
        with run_folder_lock(
            cfg.out, take=ctx.is_main and not lock_held, agree=lambda failed: any_rank([failed], ctx, device)[0]
        ):
            if resume:
                start = Path(resume_from) if resume_from is not None else last_checkpoint(cfg.out)
            else:
                start = None
                # A run is never mixed into another command's folder; said before the data loads.
                held = folder_contents(cfg.out) if ctx.is_main else None
                if any_rank([held in FOREIGN_TO_TRAINING], ctx, device)[0]:
                    what = held or "another command's files"  # ranks other than 0 learn only that it failed
                    raise UserError(f"--out {cfg.out} already holds {what}; it is left as it is: choose another --out")
            return _train(cfg, start, ctx, device)
    finally:
        shutdown(ctx)


@dataclass
class _Run:
    """The live objects of a run, built once by :func:`_build`."""

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


def _train(cfg: TrainConfig, resume_from: Path | None, ctx: DistContext, device: torch.device) -> dict[str, Any]:
    """The run, top to bottom: build, start or resume, then epochs of train + validate + checkpoint."""
    run = _build(cfg, ctx, device, resume_from)
    cfg = run.cfg  # the warm-start hooks may have settled the lr (--lr auto, the step-scaled default)
    out, recipe = Path(cfg.out), cfg.recipe
    progress = _start_or_resume(run, resume_from)
    if ctx.is_main:
        _write_config(out, cfg, run.dataset, run.model, run.precision, device, run.flops_per_image, ctx, run.lr,
                      run.warm_start, run.choice)  # fmt: skip
        _log(run.dataset.describe())
        _log(f"precision {run.choice.describe()}" if run.choice else f"precision {run.precision}")
        _log(f"model {recipe.model}: {models.count_parameters(run.model):,} parameters; {device}, {run.precision}, "
             f"channels_last={run.pipeline.channels_last}; {ctx.world_size} process(es) x batch {recipe.batch_size} = "
             f"global batch {run.global_batch}, lr {run.lr:g}, {run.steps_per_epoch} steps/epoch")  # fmt: skip
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only needed here

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=progress.global_step) if ctx.is_main else None
    other_load = OtherLoad() if ctx.is_main and device.type == "cpu" else None  # checked once, after an epoch
    try:
        with _stop_on_signals() as stop:
            for epoch in range(progress.epoch, recipe.epochs):
                train_meter = _train_epoch(run, progress, epoch, stop)
                val = _validate(run)
                if scheduler_steps_per_epoch(recipe):
                    run.scheduler.step(val["top1_err"])
                record = _epoch_record(run, progress, epoch, train_meter, val)
                progress.history.append(record)
                improved = val["top1_err"] < progress.best_val_top1_err
                progress.best_val_top1_err = min(progress.best_val_top1_err, val["top1_err"])
                _save(run, progress, epoch + 1, 0, None)
                if ctx.is_main:
                    if improved:
                        _link(run.ckpt_dir / LAST, run.ckpt_dir / BEST)
                    _write_metrics(out, progress.history)
                    for key in ("train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "lr", "images_per_sec"):
                        writer.add_scalar(key, record[key], progress.global_step)
                    writer.flush()
                    _log(_format_record(record, recipe.epochs))
                    if other_load is not None:  # /proc/stat counts every CPU: os.cpu_count, not this process's affinity
                        warning = busy_cores_warning(other_load.cpus(), torch.get_num_threads(), os.cpu_count() or 1)
                        if warning:
                            _log(warning)
                        other_load = None
                if any_rank([stop.signum is not None], ctx, device)[0]:
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, run.ckpt_dir / LAST)
    finally:
        if writer is not None:
            writer.close()
    return progress.history[-1] if progress.history and ctx.is_main else {}


def _build(cfg: TrainConfig, ctx: DistContext, device: torch.device, resume_from: Path | None) -> _Run:
    """Data, model, optimizer, schedule and input pipeline of ``cfg`` on this process (``resume_from``:
    the checkpoint a resumed run continues from, whose weights and recipe win over the warm-start hooks)."""
    recipe, out, resume = cfg.recipe, Path(cfg.out), resume_from is not None
    choice = _runtime_choice(cfg, ctx, device, resume_from)
    precision = choice.precision
    torch.manual_seed(cfg.seed)  # model init, identical on every rank; data randomness is keyed
    dataset = open_dataset(cfg.data, workers=cfg.workers)
    if dataset.info.num_classes < MIN_CLASSES:  # one class: a classifier with nothing to tell apart
        raise UserError(f"{cfg.data} has {dataset.info.num_classes} class; training needs at least {MIN_CLASSES}")
    if cfg.gpu_decode:
        if device.type != "cuda" or not hasattr(dataset, "decode_device"):
            raise UserError("--gpu-decode needs --device cuda and a prepared dataset")
        dataset.decode_device = "cuda"
    if recipe.crop_pad >= 0:  # the recipe overrides the dataset's translation range
        dataset.train_augment = dataclasses.replace(dataset.train_augment, pad=recipe.crop_pad)
    if dataset.num_samples("val") == 0:
        raise UserError(f"{cfg.data} has no validation images; training reports (and the plateau schedule "
                        "follows) the validation error: prepare it with a val split (e.g. --val-fraction 0.1)")  # fmt: skip
    # --init-from: the data fitted to the weights' input size before the model takes its size from it.
    warm = warmstart.prepare(cfg.init_from, recipe.model, dataset, cfg.data, resume_from, _log if ctx.is_main else None)
    dataset = warm.dataset if warm is not None else dataset
    model_options = _model_options(recipe, dataset, cfg.model_options)
    if resume_from is not None:  # options whose default changed since (models.LEGACY_DEFAULTS): as trained
        stored = stored_model_options(resume_from)
        model_options |= {k: stored[k] for k, _ in models.LEGACY_DEFAULTS.get(recipe.model, ()) if k in stored}
    model = models.create(recipe.model, dataset.info.num_classes, **model_options)
    # --init-from / --freeze (training/warmstart.py); the weights' input norm.
    warm_norm = warmstart.start(model, warm, cfg.freeze, cfg.init_norm, cfg.pretrained_lr_scale,
                                _log if ctx.is_main else None)  # fmt: skip
    memory_format = torch.channels_last if choice.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    pipeline = InputPipeline(dataset, device, choice.channels_last, cfg.seed, norm=warm_norm, normalize=recipe.normalize,
                             pca=recipe.pca_lighting, pca_std=recipe.pca_std)  # fmt: skip
    global_batch = recipe.batch_size * ctx.world_size
    plan0 = _plan(cfg, ctx, 0)  # epoch 0: the step count, and the range test's batches
    if recipe.init in ("auto", "paper") and not resume and warm is None:  # section 5's init, if SGD is stable with it
        init, note = _settle_init(recipe, model, next(training_batches(dataset, pipeline, plan0, device))[0])
        if ctx.is_main and note:
            _log(note)
        if init != model_options["init"]:  # rebuilt from the same seed: the run is exactly `--init {init}`'s
            torch.manual_seed(cfg.seed)
            model_options["init"] = init
            model = models.create(recipe.model, dataset.info.num_classes, **model_options).to(device, memory_format=memory_format)
        cfg = dataclasses.replace(cfg, recipe=recipe.with_overrides(init=init))
        recipe = cfg.recipe
    if cfg.lr_policy == "steps" and not resume and warm is not None and warmstart.linear_probe(cfg.freeze):
        if ctx.is_main:
            _log(warmstart.probe_lr_note(recipe))
    elif cfg.lr_policy == "steps" and not resume:  # the step-scaled default (training/lr_finder.py)
        steps = recipe.epochs * plan0.steps(dataset.num_samples("train"))
        cfg = dataclasses.replace(cfg, recipe=step_scaled_recipe(recipe, steps, _log if ctx.is_main else None))
        recipe = cfg.recipe
    if cfg.lr_policy == "auto" and not resume:  # --lr auto, the LR range test (training/lr_finder.py)
        found = auto_lr(model, lambda m: make_optimizer(m, recipe, recipe.lr, device), training_batches(dataset, pipeline, plan0, device),
                        lambda *a: train_step(*a, precision, recipe.label_smoothing), recipe.lr, out, ctx, _log)  # fmt: skip
        cfg = dataclasses.replace(cfg, recipe=recipe.with_overrides(lr=found))
        recipe = cfg.recipe
    # Linear scaling rule (Goyal et al. 2017), off by default: lr grows with the global batch.
    lr = recipe.lr * ctx.world_size if recipe.scale_lr else recipe.lr
    optimizer = make_optimizer(model, recipe, lr, device)
    if cfg.init_from:  # a lower lr for the pretrained layers (before the scheduler)
        warmstart.scale_pretrained_lr(optimizer, model, cfg.pretrained_lr_scale)
    steps_per_epoch = plan0.steps(dataset.num_samples("train"))
    if steps_per_epoch == 0:
        raise UserError(f"global batch {global_batch} is larger than the training set ({dataset.num_samples('train')})")
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch, lr)
    net: nn.Module = data_parallel(model, device) if ctx.enabled else model
    if cfg.compile:
        net = torch.compile(net)
    flops = _training_flops_per_image(model, dataset, device)
    watch = ChanceWatch(dataset.info.num_classes, recipe.epochs * steps_per_epoch, lr)  # the chance-level warning (training/health.py)
    return _Run(cfg, ctx, device, precision, dataset, model, net, model_options, optimizer, scheduler, pipeline, lr,
                global_batch, steps_per_epoch, flops, watch, DeadStartWatch(lr, recipe.init, recipe.schedule), warm_start=warm.notes if warm is not None else {}, choice=choice)  # fmt: skip


def _runtime_choice(cfg: TrainConfig, ctx: DistContext, device: torch.device, resume_from: Path | None) -> Choice:
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


def _plan(cfg: TrainConfig, ctx: DistContext, epoch: int, start_step: int = 0) -> BatchPlan:
    """The training batches of ``epoch``: a shuffle keyed by (seed, epoch), this rank's share."""
    return BatchPlan(cfg.recipe.batch_size * ctx.world_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                     start_step=start_step, rank=ctx.rank, world_size=ctx.world_size, drop_last=True)  # fmt: skip


def _start_or_resume(run: _Run, resume_from: Path | None) -> Progress:
    """A fresh start (refusing to overwrite a run), or the state restored from ``resume_from``."""
    out = Path(run.cfg.out)
    if resume_from is not None:
        progress = _restore(resume_from, run)
        last = run.ckpt_dir / LAST
        if run.ctx.is_main and (not last.exists() or not resume_from.samefile(last)):
            _link(resume_from, last)  # the run now stands there (a damaged or newer last.pt is replaced)
        return progress
    if any_rank([(run.ckpt_dir / LAST).exists()], run.ctx, run.device)[0]:
        raise UserError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    torch.manual_seed(derive_seed("dropout", run.cfg.seed, run.ctx.rank))  # each rank its own dropout stream
    return Progress()


def _train_epoch(run: _Run, progress: Progress, epoch: int, stop: Any) -> Meter:
    """One epoch of training from where ``progress`` stands; returns the summed meter (all ranks).

    Around :func:`train_one_epoch`: the progress bar, the step counter and time, the agreement
    of ranks on stop and divergence flags, and step checkpoints.
    """
    cfg, ctx, recipe = run.cfg, run.ctx, run.cfg.recipe
    start = progress.step_in_epoch if epoch == progress.epoch else 0
    restored = start and progress.meter and ctx.is_main  # the saved sums are global: rank 0 carries them
    meter = Meter.from_dict(progress.meter, run.device) if restored else Meter.zeros(run.device)
    if not start:
        progress.epoch_seconds = 0.0
    clock = _Stopwatch(progress)
    shard = (ctx.rank * recipe.batch_size, (ctx.rank + 1) * recipe.batch_size)
    # How often ranks agree on stop/divergence flags: every step on CPU (free), else every 20.
    sync_every = 1 if run.device.type == "cpu" else 20
    bar = tqdm(total=run.steps_per_epoch * run.global_batch, initial=start * run.global_batch, unit="img",
               unit_scale=True, desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False, dynamic_ncols=True,
               disable=not (cfg.progress and ctx.is_main and sys.stderr.isatty()))  # fmt: skip

    inputs: list[torch.Tensor] = []  # the step's input, kept only on the steps the dead-unit check looks at

    def prepare(step: int, images: torch.Tensor) -> torch.Tensor:
        # Crops/flips drawn for the global batch; this rank applies its own slice.
        params = run.pipeline.crop_params(epoch, step, run.global_batch).slice(*shard)
        x = run.pipeline.train(images, params)
        step = progress.global_step + 1  # the dead-unit checks, and the chance check's step (alive or not)
        looked_at = run.dead_watch.due(step) or (step == run.watch.check_step and not run.watch.fired)
        inputs[:] = [x] if looked_at else []
        return x

    def after_step(step: int, loss: torch.Tensor) -> None:
        progress.global_step += 1
        report = activation_report(run.model, inputs.pop(), run.precision) if inputs else None  # after its update
        if report is not None and progress.global_step == run.watch.check_step:
            run.watch.alive = all(a.dead_fraction < run.dead_watch.threshold for a in report.values())
        if (warning := run.watch.update(progress.global_step, loss)) and ctx.is_main:  # the chance-level warning
            _log(warning)
        if report is not None and (warning := run.dead_watch.verdict(progress.global_step, report)) and ctx.is_main:
            _log(warning)  # dead layers
        bar.update(run.global_batch)
        if (step + 1) % sync_every == 0:
            stopping, diverged = any_rank([stop.signum is not None, not meter.is_finite()], ctx, run.device)
            if diverged:
                raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.optimizer.param_groups[0]['lr']:.2e}")
            if stopping:
                clock.tick()
                _save(run, progress, epoch, step + 1, meter)
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, run.ckpt_dir / LAST)
        if cfg.checkpoint_every and progress.global_step % cfg.checkpoint_every == 0:
            clock.tick()
            _save(run, progress, epoch, step + 1, meter)
            if ctx.is_main:
                _link(run.ckpt_dir / LAST, run.ckpt_dir / step_file_name(progress.global_step))
                prune_step_checkpoints(run.ckpt_dir, cfg.keep_checkpoints)

    try:
        train_one_epoch(
            run.net, run.optimizer, run.dataset.batches("train", _plan(cfg, ctx, epoch, start)), prepare, meter,
            run.precision, start_step=start, label_smoothing=recipe.label_smoothing,
            scheduler=run.scheduler if scheduler_steps_per_batch(recipe) else None, after_step=after_step,
        )  # fmt: skip
    finally:
        bar.close()  # before any message: the bar's line is cleared, so the next line starts fresh
    clock.tick()
    totals = meter.reduced(run.reduce_sum)
    if not totals.is_finite():
        raise NonFiniteLoss(f"loss is not finite at the end of epoch {epoch + 1}")
    return totals


def _validate(run: _Run) -> dict[str, float]:
    """Validation loss and errors of the model as it is now (all ranks together)."""
    ctx, cfg = run.ctx, run.cfg
    transform, crops = run.pipeline.eval_views(cfg.recipe.eval_views)
    plan = BatchPlan(cfg.eval_batch_size * ctx.world_size, rank=ctx.rank, world_size=ctx.world_size)
    meter = evaluate([run.model], run.dataset.batches("val", plan), transform, run.precision, run.device, crops=crops)
    return meter.reduced(run.reduce_sum).summary()


def _epoch_record(run: _Run, progress: Progress, epoch: int, train_meter: Meter, val: dict[str, float]) -> dict[str, Any]:
    """One line of metrics.jsonl."""
    stats, seen, seconds = train_meter.summary(), train_meter.count, progress.epoch_seconds
    flops = run.flops_per_image
    return {
        "epoch": epoch + 1,
        "step": progress.global_step,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": stats["loss"],
        "train_top1_err": stats["top1_err"],
        "val_loss": val["loss"],
        "val_top1_err": val["top1_err"],
        "val_top5_err": val["top5_err"],
        "images_per_sec": seen / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "train_seconds_total": progress.train_seconds,
        "gflops_per_sec": seen * flops / seconds / 1e9 if seconds > 0 else 0.0,
    }


class _Stopwatch:
    """Moves wall-clock time into the run's progress record (total and this epoch)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.clock = progress, time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.progress.train_seconds += now - self.clock
        self.progress.epoch_seconds += now - self.clock
        self.clock = now


def _save(run: _Run, progress: Progress, epoch: int, step_in_epoch: int, meter: Meter | None) -> None:
    """Write ``last.pt``. Collective: every rank calls it; rank 0 writes."""
    # Never replace a good checkpoint with a diverged one: the loss so far and the weights
    # after the last update must both be finite.
    if (meter is not None and not meter.is_finite()) or not _weights_finite(run.model):
        raise NonFiniteLoss(f"training diverged (non-finite loss or weights) by epoch {epoch + 1} step {step_in_epoch}")
    rng = gather_objects(_rng_state(), run.ctx)
    totals = meter.reduced(run.reduce_sum).as_dict() if meter is not None else None
    if not run.ctx.is_main:
        return
    info = run.dataset.info
    data = DataSpec(info.name, info.channels, info.image_size, run.dataset.eval_crop, info.synthetic, run.pipeline.norm)
    state = dataclasses.replace(progress, epoch=epoch, step_in_epoch=step_in_epoch, meter=totals)
    ckpt = Checkpoint(run.model.state_dict(), run.cfg.recipe.model, run.model_options, tuple(info.classes), data, state,
                      run.optimizer.state_dict(), run.scheduler.state_dict(), rng, run.cfg.to_dict())  # fmt: skip
    save_checkpoint(run.ckpt_dir / LAST, ckpt)


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _model_options(recipe: Recipe, dataset: Dataset, extra: dict[str, Any]) -> dict[str, Any]:
    """Model keyword options implied by the recipe and the data, plus the user's extras."""
    accepted = models.model_options(recipe.model)
    init = "paper" if recipe.init == "auto" else recipe.init  # auto: built as section 5 says, then checked
    options: dict[str, Any] = {"in_channels": dataset.info.channels, "init": init, "dropout": recipe.dropout}
    if "image_size" in accepted:
        options["image_size"] = dataset.eval_crop
    return options | extra


def _settle_init(recipe: Recipe, model: nn.Module, images: torch.Tensor) -> tuple[str, str | None]:
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


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def _restore(path: Path, run: _Run) -> Progress:
    """Load the checkpoint at ``path`` into the live objects; return where to continue."""
    ckpt = read_checkpoint(path)
    ckpt.require_training_state()
    ckpt.load_weights_into(run.model)
    try:
        run.optimizer.load_state_dict(ckpt.optimizer)
        run.scheduler.load_state_dict(ckpt.scheduler)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise UserError(f"{path}: its optimizer or schedule state does not fit this run ({str(e).splitlines()[0]})") from None
    if len(ckpt.rng) != run.ctx.world_size:
        raise UserError(f"{path} was saved by {len(ckpt.rng)} process(es); resume it with the same number "
                        f"(now {run.ctx.world_size})")  # fmt: skip
    mine = ckpt.rng[run.ctx.rank]
    torch.set_rng_state(mine["torch"])
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda"], torch.cuda.current_device())
    return ckpt.progress


@dataclass(frozen=True)
class ResumePoint:
    """What ``--resume`` continues: the run folder, the checkpoint file and its saved config."""

    run: Path
    checkpoint: Path
    config: TrainConfig
    note: str | None = None  # said to the user when not the run's last.pt is used


def find_resume_point(target: str | Path, fall_back: bool = False) -> ResumePoint:
    """The checkpoint ``--resume TARGET`` continues from.

    ``TARGET`` is a run folder (its ``checkpoints/last.pt``) or a checkpoint file inside a run's
    ``checkpoints/`` folder (that file). A damaged ``last.pt`` (truncated, empty) is reported
    with the newest valid step checkpoint; with ``fall_back`` that one is used instead.
    """
    target = Path(target)
    if target.is_file():
        if target.parent.name != CHECKPOINTS:
            raise UserError(f"{target} is not inside a run's checkpoints/ folder; give the run folder to --resume")
        ckpt = read_checkpoint(target)
        ckpt.require_training_state()
        return ResumePoint(target.parent.parent, target, _saved_config(ckpt))
    if not target.is_dir():
        if target.parent.name == CHECKPOINTS and target.parent.is_dir():  # a step checkpoint pruned since
            kept = ", ".join(p.name for _, p in step_checkpoints(target.parent)) or "none"
            raise UserError(f"checkpoint not found: {target} (step checkpoints kept: {kept}); "
                            f"give one of those or the run folder {target.parent.parent}")  # fmt: skip
        raise UserError(f"run folder not found: {target}")
    last = last_checkpoint(target)
    if not last.exists():
        raise UserError(f"{target} has no checkpoints/{LAST}: nothing to resume (start it with --out {target})")
    try:
        ckpt = read_checkpoint(last)
        ckpt.require_training_state()
        return ResumePoint(target, last, _saved_config(ckpt))
    except UserError as damage:
        found = newest_valid_checkpoint(last.parent, exclude=last)
        if found is None:
            raise UserError(f"{damage}; no valid step checkpoint to fall back to either") from None
        path, valid = found
        where = f"{path.name} (step {valid.progress.global_step})"
        if not fall_back:
            raise UserError(f"{damage}; the newest valid checkpoint is {where}: resume from it with "
                            "--resume-from-valid") from None  # fmt: skip
        note = f"{last} is damaged; resuming from {where}, the newest valid checkpoint"
        return ResumePoint(target, path, _saved_config(valid), note)


def _saved_config(ckpt: Checkpoint) -> TrainConfig:
    try:
        return TrainConfig.from_dict(ckpt.config)
    except (TypeError, KeyError, ValueError) as e:
        raise UserError(f"{ckpt.source} holds a run config this alexnet cannot read ({e})") from None


def load_run_config(run: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a run's last checkpoint (for ``--resume``)."""
    return find_resume_point(run).config


@contextmanager
def _stop_on_signals() -> Iterator[Any]:
    """Turn the first SIGTERM/SIGINT into a flag the loop checks after each step."""

    class Flag:
        signum: int | None = None

    flag = Flag()

    def handler(signum: int, _frame: Any) -> None:
        if flag.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes another name for ``src``'s current content (hard link; copy if unsupported).

    ``last.pt`` is always replaced by rename, so the link keeps the old content: best.pt and
    step checkpoints cost no write when taken, but each holds a full copy of the checkpoint once
    ``last.pt`` has moved on (hence ``keep_checkpoints``).
    """
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.hardlink_to(src)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _training_flops_per_image(model: nn.Module, dataset: Dataset, device: torch.device) -> float:
    """Forward + backward FLOPs for one image (3x the forward count, the usual estimate)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, dataset.info.channels, dataset.eval_crop, dataset.eval_crop, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return 3.0 * counter.get_total_flops()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_config(
    out: Path,
    cfg: TrainConfig,
    dataset: Dataset,
    model: nn.Module,
    precision: str,
    device: torch.device,
    flops: float,
    ctx: DistContext,
    lr: float,
    warm_start: dict[str, str] | None = None,
    choice: Choice | None = None,
) -> None:
    write_config(
        out,
        {
            "config": cfg.to_dict(),
            "resolved": {
                "device": str(device), "precision": precision, "world_size": ctx.world_size,
                "backend": ctx.backend, "global_batch": cfg.recipe.batch_size * ctx.world_size,
                "per_process_batch": cfg.recipe.batch_size, "lr": lr,
                "parameters": models.count_parameters(model), "train_flops_per_image": flops,
                "channels_last": choice.channels_last if choice else cfg.channels_last,
                "precision_choice": choice.to_dict() if choice else None,
            },
            "dataset": {**dataclasses.asdict(dataset.info), "train": dataset.num_samples("train"), "val": dataset.num_samples("val")},
            "warm_start": warm_start or {},
            "versions": {"alexnet": __version__, "torch": torch.__version__, "torchvision": importlib.metadata.version("torchvision"),
                         "python": platform.python_version()},
            "git_commit": _git_commit(),
            "host": {"platform": platform.platform(), "processor": cpu_name(), "cpu_threads": torch.get_num_threads()},
        },
    )  # fmt: skip


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the checkpointed history, so it always matches last.pt."""
    write_metrics(out, history)


def _format_record(r: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {r['epoch']:>3}/{epochs}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f} err {r['train_top1_err']:.2%}  "
        f"val loss {r['val_loss']:.4f} top-1 err {r['val_top1_err']:.2%} top-5 err {r['val_top5_err']:.2%}  "
        f"{r['images_per_sec']:.0f} img/s  {r['seconds']:.1f}s"
    )


def _log(message: str) -> None:
    tqdm.write(message)
