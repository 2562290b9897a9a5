"""Run a :class:`~alexnet.experiments.plans.Plan`: skip finished runs, resume an unfinished one.

A run is finished when its ``metrics.jsonl`` holds every epoch of its recipe; a run with a
checkpoint but fewer epochs is continued with the trainer's own exact resume
(``train(cfg, resume=True)``, as ``alexnet train --resume``); anything else starts fresh.
A run folder that holds a run with other settings is never touched: the experiment stops with
a one-line error (another ``--out``, or the same command as before).

Several experiments share an arm: the paper's configuration is the baseline of lrn,
overlapping-pooling, two-towers, ten-crop and depth, spelled differently in each (``lrn=True``,
``pooling=overlapping``, ``alexnet-small-depth`` with ``remove=none``). Before training a new run,
the runner looks in the other experiments under the same ``--out`` for a finished run of the same
network (:func:`alexnet.models.canonical`), recipe, data, seed and runtime settings, and copies it
instead (``copied-from.json`` says from where): training is bit-reproducible on one machine, so
the copy is what training would have produced, and ``experiment all`` trains that arm once.

Several processes may run the same command side by side (one per GPU, or one per machine on a
shared disk) and share out its runs: each run is decided and trained under its run folder's
lock, a process passes over a run another one holds and waits for it at the end (see
:func:`run_plan`).

The ``views`` experiment then evaluates every trained net once per test-time view and keeps
each result as ``eval-VIEW.json`` in the run folder (also skipped when present).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet.errors import UserError
from alexnet.experiments.paper_size import ensure_prepared
from alexnet.experiments.plans import Plan, PlannedRun
from alexnet.io import atomic_write_json
from alexnet.models import canonical
from alexnet.runfolder import (
    CONFIG,
    LOCK_NAME,
    FolderInUse,
    last_checkpoint,
    read_config,
    read_metrics,
    run_folder_lock,
)
from alexnet.training.config import TrainConfig
from alexnet.training.trainer import train

COPIED_FROM = "copied-from.json"
# The settings that define a run's result; runtime ones (progress bar, decoding threads) may differ.
_DEFINING = ("data", "recipe", "seed", "model_options")
# How often a plan looks again at the runs another process is training (seconds).
POLL_SECONDS = 10.0
# What may differ between a run and one copied in its place: where it is and how it narrates.
_NOT_COPIED = ("out", "progress", "workers")


@dataclass(frozen=True)
class RunEvent:
    """Progress of a plan, for the caller to show.

    ``state`` is ``skip`` (finished before), ``copy`` (the same run finished in another
    experiment, copied from ``source``), ``busy`` (another process is training it: waited for),
    ``resume``, ``start``, ``done`` or ``eval``;
    ``eta_seconds`` is the estimated time left for the whole experiment (:func:`eta_seconds`;
    ``None`` until an epoch has finished since this invocation started).
    """

    state: str
    index: int
    total: int
    arm: str
    seed: int
    folder: Path
    eta_seconds: float | None
    source: Path | None = None


def run_status(run: PlannedRun) -> str:
    """``done``, ``partial`` (a checkpoint to resume from) or ``new``."""
    folder = run.folder
    _check_same_run(folder, run.config)
    if len(read_metrics(folder)) >= run.config.recipe.epochs:
        return "done"
    return "partial" if last_checkpoint(folder).is_file() else "new"


def _check_same_run(folder: Path, cfg: TrainConfig) -> None:
    if not (folder / CONFIG).is_file():
        return
    saved = _saved_config(folder)
    if saved is None:
        raise UserError(f"{folder / CONFIG} is unreadable; remove {folder} or choose another --out")
    wanted = _as_saved(cfg)
    # epochs may grow, as with `train --resume --epochs`: the first epochs are the same run's.
    saved, wanted = _network_spelled_out(saved, epochs=False), _network_spelled_out(wanted, epochs=False)
    if wanted.get("recipe", {}).get("init") == "auto" and saved.get("recipe", {}).get("init") in ("paper", "caffe"):
        wanted["recipe"]["init"] = saved["recipe"]["init"]  # auto settles on one of the two at the start (trainer)
    differs = [k for k in _DEFINING if saved.get(k) != wanted[k]]
    if differs:
        raise UserError(
            f"{folder} holds a run with other settings ({', '.join(differs)} differ); "
            "choose another --out or repeat the command that made it"
        )


def _saved_config(folder: Path) -> dict[str, Any] | None:
    """The ``config`` of a run folder's ``config.json`` (``None`` if unreadable)."""
    try:
        saved = (read_config(folder) or {}).get("config")
    except UserError:
        return None
    return saved if isinstance(saved, dict) else None


def _as_saved(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(cfg.to_dict()))  # as JSON would store it (tuples -> lists)


def _network_spelled_out(config: dict[str, Any], epochs: bool = True) -> dict[str, Any]:
    """``config`` with its model named canonically (:func:`alexnet.models.canonical`), without
    ``recipe.epochs`` unless ``epochs``; ``{}`` for a config that names no known model."""
    recipe = config.get("recipe")
    options = config.get("model_options")
    if not isinstance(recipe, dict) or not isinstance(options, dict):
        return {}
    try:
        model, full = canonical(str(recipe.get("model")), options)
    except UserError:
        return {}
    recipe = {k: v for k, v in recipe.items() if epochs or k != "epochs"} | {"model": model}
    return config | {"recipe": recipe, "model_options": json.loads(json.dumps(full))}


def find_copy_source(run: PlannedRun, root: Path) -> Path | None:
    """A finished run of the same network and settings as ``run`` in another experiment under
    ``root`` (the ``--out`` folder: ``root/EXPERIMENT/ARM/seed-S``), or ``None``."""
    wanted = _copy_identity(_as_saved(run.config))
    for path in sorted(root.glob(f"*/*/seed-{run.seed}/{CONFIG}")):
        folder = path.parent
        if folder.resolve() == run.folder.resolve() or len(read_metrics(folder)) != run.config.recipe.epochs:
            continue
        saved = _saved_config(folder)
        if saved is not None and last_checkpoint(folder).is_file() and _copy_identity(saved) == wanted:
            return folder
    return None


def _copy_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What two runs must share for one to stand in for the other."""
    return {k: v for k, v in _network_spelled_out(config).items() if k not in _NOT_COPIED}


def copy_run(source: Path, folder: Path) -> bool:
    """Copy the finished run ``source`` to the new run folder ``folder``: written whole under a
    name of this process's, then renamed into place. ``False`` (nothing changed) when ``folder``
    was taken meanwhile (another process copied the run, or started training it)."""
    for stale in folder.parent.glob(f".{folder.name}.copying-*"):  # left by a killed copy
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = folder.with_name(f".{folder.name}.copying-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(LOCK_NAME, COPIED_FROM))
    atomic_write_json(staging / COPIED_FROM, {"source": str(source.resolve())})
    try:
        staging.rename(folder)  # atomic; replaces only a missing or empty folder
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def require_colour(plan: Plan) -> None:
    """A :class:`UserError` unless the plan's data has three colour channels (PCA colour noise)."""
    from alexnet.data import open_dataset

    info = open_dataset(plan.data).info
    if info.channels != 3:
        raise UserError(
            f"{plan.experiment.name} needs colour images and {plan.data} has {info.channels} channel(s); "
            "use colour data, e.g. CIFAR-10 prepared with `alexnet prepare` (--data FOLDER)"
        )


def prepare_data(plan: Plan, log: Callable[[str], None]) -> None:
    """Prepare the plan's data at the experiment's size first, if it trains on prepared data."""
    if plan.to_prepare is not None and plan.experiment.prepared_size is not None:
        ensure_prepared(plan.to_prepare, Path(plan.runs[0].config.data), plan.experiment.prepared_size, log)


def run_plan(plan: Plan, on_event: Callable[[RunEvent], None] | None = None) -> None:
    """Train every run of ``plan`` that is not finished, then the ``views`` evaluations.

    Each run is decided (skip, resume or start) and trained under its run folder's lock (one
    writer, ``alexnet/runfolder.py``). So several processes may run one plan side by side (one
    per GPU, or per machine on a shared disk): a process passes over the runs another one holds
    and, when nothing else is left, waits for them (polling every :data:`POLL_SECONDS`). The
    results files are written whole by each process (``write_outputs``): equal copies.
    """
    emit = on_event or (lambda _e: None)
    runs, epochs, total = plan.runs, plan.budget.epochs, len(plan.runs)
    status = [run_status(r) for r in runs]  # a folder holding other settings stops here, before any work
    sources = [
        find_copy_source(r, plan.out.parent) if s == "new" and _empty(r.folder) else None for s, r in zip(status, runs)
    ]
    to_train = [r for r, src in zip(runs, sources) if src is None]  # copies take no training time
    at_start, started = epochs_done(to_train, epochs), time.monotonic()

    def event(state: str, i: int, source: Path | None = None) -> RunEvent:
        eta = eta_seconds(time.monotonic() - started, to_train, epochs, at_start)
        return RunEvent(state, i, total, runs[i].arm, runs[i].seed, runs[i].folder, eta, source)

    def attempt(i: int, _busy: list[int]) -> None:
        run, source = runs[i], sources[i]
        if source is not None and _empty(run.folder) and copy_run(source, run.folder):
            emit(event("copy", i, source))
            return
        with run_folder_lock(run.folder):
            state = run_status(run)  # again, under the lock: another process may have trained it
            if state == "done":
                emit(event("skip", i))
                return
            emit(event("resume" if state == "partial" else "start", i))
            train(run.config, resume=state == "partial", lock_held=True)
            if len(read_metrics(run.folder)) < epochs:  # a kill between the last checkpoint and its metrics row
                raise UserError(f"{run.folder} stopped short of {epochs} epochs; run the same command again")
            emit(event("done", i))

    share_out(total, attempt, lambda i: emit(event("busy", i)))
    for view in plan.experiment.views:
        for i, run in enumerate(runs):
            if not view_result_path(run.folder, view).is_file():
                emit(RunEvent("eval", i, total, view, run.seed, run.folder, None))
                evaluate_view(run, view)  # two processes may both evaluate: equal results, written whole


def share_out(count: int, attempt: Callable[[int, list[int]], None], on_busy: Callable[[int], None]) -> None:
    """Call ``attempt(i, busy)`` for each of ``count`` jobs; a job whose folder another process
    holds (:class:`FolderInUse`) is passed over (``on_busy(i)``, once) and tried again after the
    others, every :data:`POLL_SECONDS`, until none is left. ``busy``: the jobs passed over so far
    in this round (a job that depends on one of them can pass itself over by raising FolderInUse).
    """
    pending: list[int] = list(range(count))
    told: set[int] = set()
    while pending:
        busy: list[int] = []
        for i in pending:
            try:
                attempt(i, busy)
            except FolderInUse:
                if i not in told:
                    told.add(i)
                    on_busy(i)
                busy.append(i)
        if busy:
            time.sleep(POLL_SECONDS)
        pending = busy


def epochs_done(runs: list[PlannedRun], epochs: int) -> int:
    """The epochs finished so far in these runs' folders, by this process or by any other."""
    return sum(min(epochs, len(read_metrics(r.folder))) for r in runs)


def eta_seconds(elapsed: float, runs: list[PlannedRun], epochs: int, done_at_start: int) -> float | None:
    """The time left to train ``runs``, at the pace of every process that trains them.

    Pace: the epochs finished since the start (by anyone: each run's metrics file), per second of
    ``elapsed``. With two processes on one plan each one sees the other's epochs, so neither
    counts the other's runs as its own work still to do. ``None`` until an epoch has finished.
    """
    done = epochs_done(runs, epochs)
    if done <= done_at_start:
        return None
    return elapsed / (done - done_at_start) * (epochs * len(runs) - done)


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def view_result_path(folder: Path, view: str) -> Path:
    """Where the evaluation of a run's net under ``view`` is kept."""
    return folder / f"eval-{view}.json"


def evaluate_view(run: PlannedRun, view: str) -> dict[str, Any]:
    """Evaluate the run's last checkpoint on its validation split with ``view``; keep the result."""
    from alexnet.evaluation import evaluate_checkpoints

    result = evaluate_checkpoints([str(run.folder)], data=run.config.data, views=view, device_name=run.config.device,
                                  precision_name=run.config.precision, workers=0)  # fmt: skip
    atomic_write_json(view_result_path(run.folder, view), result)
    return result
