"""Resume: which checkpoint ``--resume`` continues from, and putting its state back into the
live model, optimizer, schedule and random number generators.

Everything random in a run is either keyed by (seed, epoch, step) or lives in the global torch
RNG, whose state every checkpoint saves (one per process): restored here, a run killed at any
step ends with bit-identical weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.checkpoint import Checkpoint, Progress, read_checkpoint
from alexnet.errors import UserError
from alexnet.runfolder import BEST, CHECKPOINTS, LAST, last_checkpoint, step_checkpoints
from alexnet.training.config import TrainConfig
from alexnet.training.distributed import DistContext


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


def rng_state() -> dict[str, Any]:
    """This process's random number generator states, as a checkpoint keeps them."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def restore(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, ctx: DistContext
) -> Progress:
    """Load the checkpoint at ``path`` into the live objects and this rank's RNG; return where to continue."""
    ckpt = read_checkpoint(path)
    ckpt.require_training_state()
    ckpt.load_weights_into(model)
    try:
        optimizer.load_state_dict(ckpt.optimizer)
        scheduler.load_state_dict(ckpt.scheduler)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise UserError(f"{path}: its optimizer or schedule state does not fit this run ({str(e).splitlines()[0]})") from None
    if len(ckpt.rng) != ctx.world_size:
        raise UserError(f"{path} was saved by {len(ckpt.rng)} process(es); resume it with the same number "
                        f"(now {ctx.world_size})")  # fmt: skip
    mine = ckpt.rng[ctx.rank]
    torch.set_rng_state(mine["torch"])
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda"], torch.cuda.current_device())
    return ckpt.progress


def newest_valid_checkpoint(ckpt_dir: Path, exclude: Path | None = None) -> tuple[Path, Checkpoint] | None:
    """The resumable checkpoint of a run with the most steps, among ``best.pt`` and the step
    checkpoints (``exclude``: a file known to be damaged); None if there is none."""
    candidates = [p for _, p in step_checkpoints(ckpt_dir)]
    if (ckpt_dir / BEST).is_file():
        candidates.append(ckpt_dir / BEST)
    best: tuple[Path, Checkpoint] | None = None
    for p in candidates:
        if exclude is not None and p.resolve() == exclude.resolve():
            continue
        try:
            ckpt = read_checkpoint(p)
            ckpt.require_training_state()
        except UserError:
            continue
        if best is None or ckpt.progress.global_step > best[1].progress.global_step:
            best = (p, ckpt)
    return best
