"""``alexnet train``: one flat training loop with exact resume.

Reading order: :class:`TrainConfig` (what to run), :func:`train` (the loop), then the helpers
below it. Everything random is either keyed by (seed, epoch, step) (data order, crops, flips)
or lives in the global torch RNG (dropout) whose state is saved in every checkpoint, so a run
killed at any step and resumed from its last checkpoint ends with bit-identical weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import signal
import subprocess
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
from alexnet.data import BatchPlan, open_dataset
from alexnet.data.dataset import Dataset
from alexnet.data.seeding import derive_seed
from alexnet.errors import UserError
from alexnet.io import atomic_write_json, atomic_write_text
from alexnet.runtime import fast_sgd_options, resolve_device, resolve_precision, tune_cpu_allocator
from alexnet.training import warmstart
from alexnet.training.checkpoint import load_checkpoint, save_checkpoint
from alexnet.training.distributed import (
    DistContext,
    any_rank,
    data_parallel,
    gather_objects,
    init_from_env,
    shutdown,
)
from alexnet.training.health import ChanceWatch
from alexnet.training.loop import InputNorm, InputPipeline, Meter, evaluate, train_step
from alexnet.training.lr_finder import auto_lr, step_scaled_recipe, training_batches
from alexnet.training.recipes import Recipe, get_recipe
from alexnet.training.schedule import make_scheduler, scheduler_steps_per_batch


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
    channels_last: bool = True
    compile: bool = False
    workers: int = 0  # decoding threads for prepared datasets; 0 = in the training thread
    gpu_decode: bool = False  # prepared JPEGs decoded on the GPU (CUDA only)
    checkpoint_every: int = 0
    eval_batch_size: int = 500
    progress: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)
    # Issue 11 (own images): the LR range test, and starting from pretrained weights.
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
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Progress:
    """Where the run is: the resume point stored in checkpoints."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    best_val_top1_err: float = math.inf
    epoch_seconds: float = 0.0  # training time spent in the current epoch so far
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: dict[str, float] | None = None  # partial sums of the current epoch (mid-epoch resume)


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) the run in ``cfg.out``; returns the last epoch's metrics.

    Under ``torchrun`` every process runs this function: data-parallel (DDP), ``recipe.batch_size``
    images per process, rank 0 alone writing the run folder.
    """
    tune_cpu_allocator()
    ctx, device = init_from_env(resolve_device(cfg.device))
    try:
        return _train(cfg, resume, ctx, device)
    finally:
        shutdown(ctx)


def _train(cfg: TrainConfig, resume: bool, ctx: DistContext, device: torch.device) -> dict[str, Any]:
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    recipe = cfg.recipe
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)  # model init, identical on every rank; data randomness is keyed
    dataset = open_dataset(cfg.data, workers=cfg.workers)
    if cfg.gpu_decode:
        if device.type != "cuda" or not hasattr(dataset, "decode_device"):
            raise UserError("--gpu-decode needs --device cuda and a prepared dataset")
        dataset.decode_device = "cuda"
    if recipe.crop_pad >= 0:  # the recipe overrides the dataset's translation range
        dataset.train_augment = dataclasses.replace(dataset.train_augment, pad=recipe.crop_pad)
    model_options = _model_options(recipe, dataset, cfg.model_options)
    model = models.create(recipe.model, dataset.info.num_classes, **model_options)
    # Issue 11 hook: --init-from / --freeze (training/warmstart.py); the weights' input norm.
    warm_norm = warmstart.start(model, cfg.init_from, cfg.freeze, cfg.init_norm, cfg.pretrained_lr_scale, recipe.model,
                                dataset, ckpt_dir / "last.pt" if resume else None, _log if ctx.is_main else None)  # fmt: skip
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    pipeline = InputPipeline(dataset, device, cfg.channels_last, cfg.seed, norm=warm_norm, normalize=recipe.normalize,
                             pca=recipe.pca_lighting, pca_std=recipe.pca_std)  # fmt: skip
    global_batch = recipe.batch_size * ctx.world_size
    plan0 = BatchPlan(global_batch, shuffle=True, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, drop_last=True)
    if cfg.lr_policy == "steps" and not resume:  # Issue 11 hook: the step-scaled default (training/lr_finder.py)
        steps = recipe.epochs * plan0.steps(dataset.num_samples("train"))
        cfg = dataclasses.replace(cfg, recipe=step_scaled_recipe(recipe, steps, _log if ctx.is_main else None))
        recipe = cfg.recipe
    if cfg.lr_policy == "auto" and not resume:  # Issue 11 hook: --lr auto, the LR range test (training/lr_finder.py)
        found = auto_lr(model, lambda m: _make_optimizer(m, recipe, recipe.lr, device), training_batches(dataset, pipeline, plan0, device),
                        lambda *a: train_step(*a, precision, recipe.label_smoothing), recipe.lr, out, ctx, _log)  # fmt: skip
        cfg = dataclasses.replace(cfg, recipe=recipe.with_overrides(lr=found))
        recipe = cfg.recipe
    # Linear scaling rule (Goyal et al. 2017), off by default: lr grows with the global batch.
    lr = recipe.lr * ctx.world_size if recipe.scale_lr else recipe.lr
    optimizer = _make_optimizer(model, recipe, lr, device)
    if cfg.init_from:  # Issue 11 hook: a lower lr for the pretrained layers (before the scheduler)
        warmstart.scale_pretrained_lr(optimizer, model, cfg.pretrained_lr_scale)
    steps_per_epoch = plan0.steps(dataset.num_samples("train"))
    if steps_per_epoch == 0:
        raise UserError(f"global batch {global_batch} is larger than the training set ({dataset.num_samples('train')})")
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    exists = any_rank([(ckpt_dir / "last.pt").exists()], ctx, device)[0]
    progress = Progress()
    if resume:
        progress = _restore(ckpt_dir / "last.pt", model, optimizer, scheduler, ctx)
    elif exists:
        raise UserError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    else:  # each rank its own dropout stream (restored from the checkpoint on resume)
        torch.manual_seed(derive_seed("dropout", cfg.seed, ctx.rank))
    net: nn.Module = model
    if ctx.enabled:
        net = data_parallel(model, device)
    if cfg.compile:
        net = torch.compile(net)
    val_transform, val_crops = pipeline.eval_views(recipe.eval_views)
    flops_per_image = _training_flops_per_image(model, dataset, device)
    main = ctx.is_main
    if main:
        _write_config(out, cfg, dataset, model, precision, device, flops_per_image, ctx, lr)
        _log(dataset.describe())
        _log(f"model {recipe.model}: {models.count_parameters(model):,} parameters; {device}, {precision}, "
             f"channels_last={cfg.channels_last}; {ctx.world_size} process(es) x batch {recipe.batch_size} = "
             f"global batch {global_batch}, lr {lr:g}, {steps_per_epoch} steps/epoch")  # fmt: skip
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=progress.global_step) if main else None
    per_batch = scheduler_steps_per_batch(recipe)
    # How often ranks agree on stop/divergence flags: every step on CPU (free), else every 20.
    sync_every = 1 if device.type == "cpu" else 20
    watch = ChanceWatch(dataset.info.num_classes, recipe.epochs * steps_per_epoch, lr)  # Issue 11 hook (training/health.py)

    def checkpoint(path: Path, epoch: int, step_in_epoch: int, meter: Meter | None) -> None:
        """Collective: every rank calls it; rank 0 writes."""
        # Never replace a good checkpoint with a diverged one: the loss so far and the weights
        # after the last update must both be finite.
        if (meter is not None and not meter.is_finite()) or not _weights_finite(model):
            raise NonFiniteLoss(f"training diverged (non-finite loss or weights) by epoch {epoch + 1} step {step_in_epoch}")
        rng = gather_objects(_rng_state(), ctx)
        totals = meter.reduced(ctx).as_dict() if meter is not None else None
        if main:
            state = dataclasses.replace(progress, epoch=epoch, step_in_epoch=step_in_epoch, meter=totals)
            save_checkpoint(path, _checkpoint_dict(model, optimizer, scheduler, state, cfg, dataset, model_options, rng,
                                                   pipeline.norm))  # fmt: skip

    try:
        with _stop_on_signals() as stop:
            for epoch in range(progress.epoch, recipe.epochs):
                start = progress.step_in_epoch if epoch == progress.epoch else 0
                restored = start and progress.meter and main  # the saved sums are global: rank 0 carries them
                meter = Meter.from_dict(progress.meter, device) if restored else Meter.zeros(device)
                plan = dataclasses.replace(plan0, epoch=epoch, start_step=start)
                model.train()
                bar = tqdm(total=steps_per_epoch * global_batch, initial=start * global_batch, unit="img",
                           unit_scale=True, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                           disable=not (cfg.progress and main), leave=False, dynamic_ncols=True)  # fmt: skip
                if not start:
                    progress.epoch_seconds = 0.0
                clock = time.perf_counter()

                def tick() -> None:  # move the time since the last tick into the progress record
                    nonlocal clock
                    now = time.perf_counter()
                    progress.train_seconds += now - clock
                    progress.epoch_seconds += now - clock
                    clock = now

                for step, (images, labels) in enumerate(dataset.batches("train", plan), start=start):
                    # Crops/flips drawn for the global batch; this rank applies its own slice.
                    params = pipeline.crop_params(epoch, step, global_batch)
                    params = params.slice(ctx.rank * recipe.batch_size, (ctx.rank + 1) * recipe.batch_size)
                    x, y = pipeline.train(images, params), labels.to(device, non_blocking=True)
                    loss, logits = train_step(net, optimizer, x, y, precision, recipe.label_smoothing)
                    meter.update(loss, logits, y)
                    if per_batch:
                        scheduler.step()
                    progress.global_step += 1
                    if (warning := watch.update(progress.global_step, loss)) and main:  # Issue 11 hook: chance-level warning
                        _log(warning)
                    bar.update(global_batch)
                    if (step + 1) % sync_every == 0:
                        stopping, diverged = any_rank([stop.signum is not None, not meter.is_finite()], ctx, device)
                        if diverged:
                            raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
                        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                        if stopping:
                            tick()
                            checkpoint(ckpt_dir / "last.pt", epoch, step + 1, meter)
                            raise TrainingInterrupted(stop.signum or signal.SIGTERM, ckpt_dir / "last.pt")
                    if cfg.checkpoint_every and progress.global_step % cfg.checkpoint_every == 0:
                        tick()
                        checkpoint(ckpt_dir / "last.pt", epoch, step + 1, meter)
                        if main:
                            _link(ckpt_dir / "last.pt", ckpt_dir / f"step-{progress.global_step:08d}.pt")
                bar.close()
                tick()
                totals = meter.reduced(ctx)
                if not totals.is_finite():
                    raise NonFiniteLoss(f"loss is not finite at the end of epoch {epoch + 1}")
                train_stats, seen, epoch_seconds = totals.summary(), totals.count, progress.epoch_seconds
                val_plan = BatchPlan(cfg.eval_batch_size * ctx.world_size, rank=ctx.rank, world_size=ctx.world_size)
                val_meter = evaluate([model], dataset.batches("val", val_plan), val_transform, precision, device,
                                     crops=val_crops)  # fmt: skip
                val = val_meter.reduced(ctx).summary()
                if not per_batch:
                    scheduler.step(val["top1_err"])
                record = {
                    "epoch": epoch + 1,
                    "step": progress.global_step,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": train_stats["loss"],
                    "train_top1_err": train_stats["top1_err"],
                    "val_loss": val["loss"],
                    "val_top1_err": val["top1_err"],
                    "val_top5_err": val["top5_err"],
                    "images_per_sec": seen / epoch_seconds if epoch_seconds > 0 else 0.0,
                    "seconds": epoch_seconds,
                    "train_seconds_total": progress.train_seconds,
                    "gflops_per_sec": seen * flops_per_image / epoch_seconds / 1e9 if epoch_seconds > 0 else 0.0,
                }
                progress.history.append(record)
                improved = val["top1_err"] < progress.best_val_top1_err
                progress.best_val_top1_err = min(progress.best_val_top1_err, val["top1_err"])
                checkpoint(ckpt_dir / "last.pt", epoch + 1, 0, None)
                if main:
                    if improved:
                        _link(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
                    _write_metrics(out, progress.history)
                    for key in ("train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "lr", "images_per_sec"):
                        writer.add_scalar(key, record[key], progress.global_step)
                    writer.flush()
                    _log(_format_record(record, recipe.epochs))
                if any_rank([stop.signum is not None], ctx, device)[0]:
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, ckpt_dir / "last.pt")
    finally:
        if writer is not None:
            writer.close()
    return progress.history[-1] if progress.history and main else {}


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _model_options(recipe: Recipe, dataset: Dataset, extra: dict[str, Any]) -> dict[str, Any]:
    """Model keyword options implied by the recipe and the data, plus the user's extras."""
    accepted = models.model_options(recipe.model)
    options: dict[str, Any] = {"in_channels": dataset.info.channels, "init": recipe.init, "dropout": recipe.dropout}
    if "image_size" in accepted:
        options["image_size"] = dataset.eval_crop
    return options | extra


def _make_optimizer(model: nn.Module, recipe: Recipe, lr: float, device: torch.device) -> torch.optim.Optimizer:
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


def _checkpoint_dict(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: Progress,
    cfg: TrainConfig,
    dataset: Dataset,
    model_options: dict[str, Any],
    rng: list[dict[str, Any]],
    norm: InputNorm,
) -> dict[str, Any]:
    info = dataset.info
    return {
        "model": model.state_dict(),
        "model_name": cfg.recipe.model,
        "model_options": model_options,
        "num_classes": info.num_classes,
        "classes": list(info.classes),
        "data": {
            "name": info.name,
            "channels": info.channels,
            "image_size": info.image_size,
            "crop": dataset.eval_crop,
            "synthetic": info.synthetic,
            **norm.to_dict(),
        },
        "epoch": progress.epoch,
        "step": progress.global_step,
        "step_in_epoch": progress.step_in_epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,  # one entry per rank
        "progress": {
            "train_seconds": progress.train_seconds,
            "epoch_seconds": progress.epoch_seconds,
            "best_val_top1_err": progress.best_val_top1_err,
            "history": progress.history,
            "meter": progress.meter,
        },
        "config": cfg.to_dict(),
    }


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, ctx: DistContext) -> Progress:
    """Load a checkpoint into the live objects; return where to continue."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    states = ckpt["rng"]
    if len(states) != ctx.world_size:
        raise UserError(f"{path} was saved by {len(states)} process(es); resume it with the same number (now {ctx.world_size})")
    mine = states[ctx.rank]
    torch.set_rng_state(mine["torch"])
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda"], torch.cuda.current_device())
    p = ckpt["progress"]
    return Progress(
        epoch=ckpt["epoch"], step_in_epoch=ckpt["step_in_epoch"], global_step=ckpt["step"],
        train_seconds=p["train_seconds"], epoch_seconds=p["epoch_seconds"], best_val_top1_err=p["best_val_top1_err"],
        history=list(p["history"]), meter=p["meter"],
    )  # fmt: skip


def load_run_config(run: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a run's last checkpoint (for ``--resume``)."""
    ckpt = load_checkpoint(Path(run) / "checkpoints" / "last.pt")
    return TrainConfig.from_dict(ckpt["config"])


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
    step checkpoints cost no extra write.
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
) -> None:
    import torchvision

    atomic_write_json(
        out / "config.json",
        {
            "config": cfg.to_dict(),
            "resolved": {
                "device": str(device), "precision": precision, "world_size": ctx.world_size,
                "backend": ctx.backend, "global_batch": cfg.recipe.batch_size * ctx.world_size,
                "per_process_batch": cfg.recipe.batch_size, "lr": lr,
                "parameters": models.count_parameters(model), "train_flops_per_image": flops,
            },
            "dataset": {**dataclasses.asdict(dataset.info), "train": dataset.num_samples("train"), "val": dataset.num_samples("val")},
            "versions": {"alexnet": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                         "python": platform.python_version()},
            "git_commit": _git_commit(),
            "host": {"platform": platform.platform(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads()},
        },
    )  # fmt: skip


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the checkpointed history, so it always matches last.pt."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _format_record(r: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {r['epoch']:>3}/{epochs}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f} err {r['train_top1_err']:.2%}  "
        f"val loss {r['val_loss']:.4f} top-1 err {r['val_top1_err']:.2%} top-5 err {r['val_top5_err']:.2%}  "
        f"{r['images_per_sec']:.0f} img/s  {r['seconds']:.1f}s"
    )


def _log(message: str) -> None:
    tqdm.write(message)
