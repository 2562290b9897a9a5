"""``alexnet train``: the run, from a :class:`TrainConfig` to a run folder, with exact resume.

Reading order: :func:`train` and :func:`_train` (the run top to bottom: build
(:mod:`~alexnet.training.build`), start or resume (:mod:`~alexnet.training.resume`), then per
epoch :func:`~alexnet.training.loop.train_one_epoch`, :func:`~alexnet.evaluation.evaluate` and a
checkpoint), then the epoch and the checkpoint writing below them. The settings are
:mod:`~alexnet.training.config`'s, the run's records :mod:`~alexnet.training.records`' and the
checkpoint format :mod:`alexnet.checkpoint`'s.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from alexnet import models
from alexnet.checkpoint import Checkpoint, DataSpec, Progress, save_checkpoint
from alexnet.data import BatchPlan
from alexnet.data.seeding import derive_seed
from alexnet.errors import UserError
from alexnet.evaluation.metrics import Meter, evaluate
from alexnet.io import replace_with_link
from alexnet.runfolder import (
    BEST,
    FOREIGN_TO_TRAINING,
    LAST,
    folder_contents,
    last_checkpoint,
    prune_step_checkpoints,
    run_folder_lock,
    step_file_name,
    write_config,
    write_metrics,
)
from alexnet.runtime import OtherLoad, busy_cores_warning, resolve_device, tune_cpu_allocator
from alexnet.training.build import LiveRun, build_run, epoch_plan
from alexnet.training.config import DEFAULT_KEEP_CHECKPOINTS, TrainConfig
from alexnet.training.distributed import DistContext, any_rank, gather_objects, init_from_env, shutdown
from alexnet.training.health import activation_report
from alexnet.training.loop import train_one_epoch
from alexnet.training.records import epoch_record, format_record, log, run_record
from alexnet.training.resume import restore, rng_state
from alexnet.training.schedule import scheduler_steps_per_batch, scheduler_steps_per_epoch
from alexnet.training.signals import TrainingInterrupted, stop_on_signals

__all__ = ["DEFAULT_KEEP_CHECKPOINTS", "NonFiniteLoss", "TrainConfig", "TrainingInterrupted", "train"]


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


def _train(cfg: TrainConfig, resume_from: Path | None, ctx: DistContext, device: torch.device) -> dict[str, Any]:
    """The run, top to bottom: build, start or resume, then epochs of train + validate + checkpoint."""
    run = build_run(cfg, ctx, device, resume_from)
    cfg = run.cfg  # the warm-start hooks may have settled the lr (--lr auto, the step-scaled default)
    out, recipe = Path(cfg.out), cfg.recipe
    progress = _start_or_resume(run, resume_from)
    if ctx.is_main:
        write_config(out, run_record(cfg, run.dataset, run.model, run.precision, device, run.flops_per_image, ctx,
                                     run.lr, run.warm_start, run.choice))  # fmt: skip
        log(run.dataset.describe())
        log(f"precision {run.choice.describe()}" if run.choice else f"precision {run.precision}")
        log(f"model {recipe.model}: {models.count_parameters(run.model):,} parameters; {device}, {run.precision}, "
             f"channels_last={run.pipeline.channels_last}; {ctx.world_size} process(es) x batch {recipe.batch_size} = "
             f"global batch {run.global_batch}, lr {run.lr:g}, {run.steps_per_epoch} steps/epoch")  # fmt: skip
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only needed here

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=progress.global_step) if ctx.is_main else None
    other_load = OtherLoad() if ctx.is_main and device.type == "cpu" else None  # checked once, after an epoch
    try:
        with stop_on_signals() as stop:
            for epoch in range(progress.epoch, recipe.epochs):
                train_meter = _train_epoch(run, progress, epoch, stop)
                val = _validate(run)
                if scheduler_steps_per_epoch(recipe):
                    run.scheduler.step(val["top1_err"])
                record = epoch_record(progress, epoch, run.optimizer.param_groups[0]["lr"], train_meter, val, run.flops_per_image)
                progress.history.append(record)
                improved = val["top1_err"] < progress.best_val_top1_err
                progress.best_val_top1_err = min(progress.best_val_top1_err, val["top1_err"])
                _save(run, progress, epoch + 1, 0, None)
                if ctx.is_main:
                    if improved:
                        replace_with_link(run.ckpt_dir / LAST, run.ckpt_dir / BEST)
                    write_metrics(out, progress.history)  # the checkpointed history: it always matches last.pt
                    for key in ("train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "lr", "images_per_sec"):
                        writer.add_scalar(key, record[key], progress.global_step)
                    writer.flush()
                    log(format_record(record, recipe.epochs))
                    if other_load is not None:  # /proc/stat counts every CPU: os.cpu_count, not this process's affinity
                        warning = busy_cores_warning(other_load.cpus(), torch.get_num_threads(), os.cpu_count() or 1)
                        if warning:
                            log(warning)
                        other_load = None
                if any_rank([stop.signum is not None], ctx, device)[0]:
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, run.ckpt_dir / LAST)
    finally:
        if writer is not None:
            writer.close()
    return progress.history[-1] if progress.history and ctx.is_main else {}


def _start_or_resume(run: LiveRun, resume_from: Path | None) -> Progress:
    """A fresh start (refusing to overwrite a run), or the state restored from ``resume_from``."""
    out = Path(run.cfg.out)
    if resume_from is not None:
        progress = restore(resume_from, run.model, run.optimizer, run.scheduler, run.ctx)
        last = run.ckpt_dir / LAST
        if run.ctx.is_main and (not last.exists() or not resume_from.samefile(last)):
            replace_with_link(resume_from, last)  # the run now stands there (a damaged or newer last.pt is replaced)
        return progress
    if any_rank([(run.ckpt_dir / LAST).exists()], run.ctx, run.device)[0]:
        raise UserError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    torch.manual_seed(derive_seed("dropout", run.cfg.seed, run.ctx.rank))  # each rank its own dropout stream
    return Progress()


def _train_epoch(run: LiveRun, progress: Progress, epoch: int, stop: Any) -> Meter:
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
            run.watch.learned_loss = min((r["train_loss"] for r in progress.history), default=None)
        if (warning := run.watch.update(progress.global_step, loss)) and ctx.is_main:  # the chance-level warning
            log(warning)
        if report is not None and (warning := run.dead_watch.verdict(progress.global_step, report)) and ctx.is_main:
            log(warning)  # dead layers
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
                replace_with_link(run.ckpt_dir / LAST, run.ckpt_dir / step_file_name(progress.global_step))
                prune_step_checkpoints(run.ckpt_dir, cfg.keep_checkpoints)

    try:
        train_one_epoch(
            run.net, run.optimizer, run.dataset.batches("train", epoch_plan(cfg, ctx, epoch, start)), prepare, meter,
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


def _validate(run: LiveRun) -> dict[str, float]:
    """Validation loss and errors of the model as it is now (all ranks together)."""
    ctx, cfg = run.ctx, run.cfg
    transform, crops = run.pipeline.eval_views(cfg.recipe.eval_views)
    plan = BatchPlan(cfg.eval_batch_size * ctx.world_size, rank=ctx.rank, world_size=ctx.world_size)
    meter = evaluate([run.model], run.dataset.batches("val", plan), transform, run.precision, run.device, crops=crops)
    return meter.reduced(run.reduce_sum).summary()


class _Stopwatch:
    """Moves wall-clock time into the run's progress record (total and this epoch)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.clock = progress, time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.progress.train_seconds += now - self.clock
        self.progress.epoch_seconds += now - self.clock
        self.clock = now


def _save(run: LiveRun, progress: Progress, epoch: int, step_in_epoch: int, meter: Meter | None) -> None:
    """Write ``last.pt``. Collective: every rank calls it; rank 0 writes."""
    # Never replace a good checkpoint with a diverged one: the loss so far and the weights
    # after the last update must both be finite.
    if (meter is not None and not meter.is_finite()) or not _weights_finite(run.model):
        raise NonFiniteLoss(f"training diverged (non-finite loss or weights) by epoch {epoch + 1} step {step_in_epoch}")
    rng = gather_objects(rng_state(), run.ctx)
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
