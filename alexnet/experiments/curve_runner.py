"""Run a :class:`~alexnet.experiments.scaling.CurvePlan`: skip finished points, resume the rest.

A network point is finished when its ``metrics.jsonl`` holds every epoch (``runner.run_status``:
a checkpoint is resumed exactly, a folder of other settings stops with one line); a baseline
point when its ``metrics.json`` exists (``alexnet baseline`` resumes its own stages); a probe
point when its ``probe.json`` exists (what ``alexnet probe --json`` prints, kept in the point's
folder: the probe's own file in the source run is rewritten by every probe of it). After each
point the process CPU seconds it took are kept in ``COST`` beside the run (``resumed``: true when
part of the work was done by an earlier, killed invocation, so the count is a lower bound).

Each point runs under its folder's lock, as :func:`~alexnet.experiments.runner.run_plan`'s runs:
the same command started in a second terminal shares out the points (a process passes over the
points another one holds, and the points that start from a source net another one is training,
and waits for them at the end).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet.baselines import fit_baseline
from alexnet.errors import UserError
from alexnet.experiments.plans import PlannedRun
from alexnet.experiments.runner import read_metrics, run_status, share_out
from alexnet.experiments.scaling import CurvePlan, Point, ProbeSpec
from alexnet.io import atomic_write_json
from alexnet.runfolder import BASELINE_METRICS, CONFIG, FolderInUse, run_folder_lock
from alexnet.training.trainer import train

COST = "experiment-cost.json"
PROBE_RESULT = "probe.json"


@dataclass(frozen=True)
class PointEvent:
    """Progress for the caller: ``state`` is ``skip``, ``busy`` (another process holds it: waited
    for at the end), ``start``, ``resume`` or ``done`` (``seconds``: the wall time it took)."""

    state: str
    index: int
    total: int
    point: Point
    seconds: float | None = None


def point_status(point: Point) -> str:
    """``done``, ``partial`` (work to resume) or ``new``."""
    if point.train is not None:
        return run_status(PlannedRun(point.system, point.seed, point.train))
    if point.probe is not None:
        return "done" if (point.folder / PROBE_RESULT).is_file() else "new"
    if (point.folder / BASELINE_METRICS).is_file():
        return "done"
    return "partial" if (point.folder / CONFIG).is_file() else "new"


def run_curve_plan(plan: CurvePlan, on_event: Callable[[PointEvent], None] | None = None) -> None:
    """Train and fit every unfinished point of ``plan`` (the transfer source nets first), passing
    over the points another process holds and waiting for them at the end."""
    emit = on_event or (lambda _e: None)
    todo = (*plan.sources, *plan.points)

    def attempt(i: int, busy: list[int]) -> None:
        point = todo[i]
        if point.needs is not None and any(todo[j].folder == point.needs for j in busy):
            raise FolderInUse(f"{point.needs} is being trained by another process")
        _run_unfinished(plan, point, lambda state, seconds=None: emit(PointEvent(state, i, len(todo), point, seconds)))

    share_out(len(todo), attempt, lambda i: emit(PointEvent("busy", i, len(todo), todo[i])))


def _run_unfinished(plan: CurvePlan, point: Point, emit: Callable[..., None]) -> None:
    """Run ``point`` under its folder's lock unless it is finished (:class:`FolderInUse` if another
    process holds it)."""
    if point_status(point) == "done":
        emit("skip")
        return
    with run_folder_lock(point.folder):
        state = point_status(point)  # again, under the lock: another process may have finished it
        if state == "done":
            emit("skip")
            return
        if point.needs is not None and point_status(_source_of(plan, point)) != "done":
            raise UserError(f"{point.folder} starts from {point.needs}, which is unfinished")
        emit("resume" if state == "partial" else "start")
        cpu, start = time.process_time(), time.perf_counter()
        _run_point(point, resume=state == "partial")
        wall = time.perf_counter() - start
        atomic_write_json(point.folder / COST, {"cpu_seconds": time.process_time() - cpu, "wall_seconds": wall,
                                                "resumed": state != "new"})  # fmt: skip
    emit("done", wall)


def _source_of(plan: CurvePlan, point: Point) -> Point:
    return next(s for s in plan.sources if s.folder == point.needs)


def _run_point(point: Point, resume: bool) -> None:
    """One point, its folder's lock held by the caller."""
    if point.probe is not None:
        _run_probe(point.probe, point.folder)
        return
    if point.baseline is not None:
        fit_baseline(point.baseline, point.folder, progress=False, lock_held=True)
        return
    assert point.train is not None
    train(point.train, resume=resume, lock_held=True)
    if len(read_metrics(point.folder)) < point.train.recipe.epochs:
        raise UserError(
            f"{point.folder} stopped short of {point.train.recipe.epochs} epochs; run the same command again"
        )


def _run_probe(spec: ProbeSpec, folder: Path) -> None:
    """``alexnet probe``'s computation (the same calls as its command), kept in ``folder``."""
    from alexnet.baselines.probe import ProbeConfig, probe
    from alexnet.evaluation.features import session_for
    from alexnet.inference import open_predictor

    predictor = open_predictor(spec.run, spec.device, spec.precision)
    session = session_for(predictor.require_network("probe"), spec.data, predictor.precision, same_classes=False)
    result = probe(
        session,
        ProbeConfig(layers=(spec.layer,), train_images=0, max_iter=spec.max_iter),
        progress=False,
        log=lambda _m: None,
    )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / PROBE_RESULT, result.to_dict())


def point_result(point: Point) -> dict[str, Any]:
    """What a finished point measured: test error, training error, CPU and wall seconds, FLOPs."""
    cost = _json(point.folder / COST)
    if point.probe is not None:
        rows = {r["name"]: r for r in _json(point.folder / PROBE_RESULT).get("rows", [])}
        row = rows.get(point.probe.layer, {})
        test = 1 - row["test_acc"] if "test_acc" in row else None
        train_err = 1 - row["train_acc"] if "train_acc" in row else None
        return {"system": point.system, "n": point.n, "seed": point.seed, "test_err": test, "train_err": train_err,
                "wall_seconds": cost.get("wall_seconds"), "cpu_seconds": cost.get("cpu_seconds"),
                "cpu_partial": cost.get("resumed", True), "flops": None, "folder": str(point.folder),
                "command": point.command()}  # fmt: skip
    if point.train is not None:
        records = read_metrics(point.folder)
        last = records[-1] if records else {}
        config = _json(point.folder / CONFIG)
        per_image = config.get("resolved", {}).get("train_flops_per_image")  # 3x forward, also for frozen layers
        flops = per_image * last["step"] * point.train.recipe.batch_size if per_image and last else None
        test, train_err, wall = last.get("val_top1_err"), last.get("train_top1_err"), last.get("train_seconds_total")
    else:
        m = _json(point.folder / BASELINE_METRICS)
        test, train_err, wall = m.get("val_top1_err"), m.get("train_top1_err"), m.get("train_seconds_total")
        # the L-BFGS fit only (each iteration: scores and gradient, two n x d x k products of 2 FLOPs
        # per multiply-add); feature extraction is not counted, so a lower bound
        dims, iters, k = m.get("feature_dim"), m.get("lbfgs_iterations"), _classes(point)
        flops = 4.0 * m["train_n"] * dims * k * iters if dims and iters and k else None
    return {"system": point.system, "n": point.n, "seed": point.seed, "test_err": test, "train_err": train_err,
            "wall_seconds": wall, "cpu_seconds": cost.get("cpu_seconds"), "cpu_partial": cost.get("resumed", True),
            "flops": flops, "folder": str(point.folder), "command": point.command()}  # fmt: skip


def _classes(point: Point) -> int | None:
    return len(_json(point.folder / CONFIG).get("classes", [])) or None


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
