"""What a run says about itself: the body of its ``config.json`` (settings, what was resolved,
versions, git commit, host), one ``metrics.jsonl`` record per epoch, and its log lines."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from alexnet import __version__, models
from alexnet.checkpoint import Progress
from alexnet.data.dataset import Dataset
from alexnet.evaluation.metrics import Meter
from alexnet.precision import Choice
from alexnet.runtime import cpu_name
from alexnet.training.config import TrainConfig
from alexnet.training.distributed import DistContext


def log(message: str) -> None:
    """A line of the run's log (above the progress bar, if one is shown)."""
    tqdm.write(message)


def run_record(
    cfg: TrainConfig, dataset: Dataset, model: nn.Module, precision: str, device: torch.device, flops: float,
    ctx: DistContext, lr: float, warm_start: dict[str, str] | None = None, choice: Choice | None = None,
) -> dict[str, Any]:
    """The run's ``config.json``: its settings, and what they resolved to on this machine."""
    return {
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
        "git_commit": git_commit(),
        "host": {"platform": platform.platform(), "processor": cpu_name(), "cpu_threads": torch.get_num_threads()},
    }  # fmt: skip


def git_commit() -> str | None:
    """The commit of the source tree alexnet runs from, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def epoch_record(
    progress: Progress, epoch: int, lr: float, train_meter: Meter, val: dict[str, float], flops_per_image: float
) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the epoch's training and validation figures and its speed."""
    stats, seen, seconds = train_meter.summary(), train_meter.count, progress.epoch_seconds
    return {
        "epoch": epoch + 1,
        "step": progress.global_step,
        "lr": lr,
        "train_loss": stats["loss"],
        "train_top1_err": stats["top1_err"],
        "val_loss": val["loss"],
        "val_top1_err": val["top1_err"],
        "val_top5_err": val["top5_err"],
        "images_per_sec": seen / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "train_seconds_total": progress.train_seconds,
        "gflops_per_sec": seen * flops_per_image / seconds / 1e9 if seconds > 0 else 0.0,
    }


def format_record(r: dict[str, Any], epochs: int) -> str:
    """An epoch record as its log line."""
    return (
        f"epoch {r['epoch']:>3}/{epochs}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f} err {r['train_top1_err']:.2%}  "
        f"val loss {r['val_loss']:.4f} top-1 err {r['val_top1_err']:.2%} top-5 err {r['val_top5_err']:.2%}  "
        f"{r['images_per_sec']:.0f} img/s  {r['seconds']:.1f}s"
    )


def training_flops_per_image(model: nn.Module, dataset: Dataset, device: torch.device) -> float:
    """Forward + backward FLOPs for one image (3x the forward count, the usual estimate)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, dataset.info.channels, dataset.eval_crop, dataset.eval_crop, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return 3.0 * counter.get_total_flops()
