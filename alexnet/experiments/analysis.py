"""Numbers from run folders: threshold crossings, mean +- std over seeds, the noise verdict.

Everything here reads ``metrics.jsonl`` records (one per epoch, as the trainer writes them) and
the ``eval-VIEW.json`` files of the ``views`` experiment; nothing trains.

The noise verdict: the difference of two arms' means is called *larger than the seed noise*
when it exceeds twice its standard error, ``sqrt(s_a^2/n_a + s_b^2/n_b)`` (unpaired: different
nets per arm), or ``s_d / sqrt(n)`` of the per-seed differences (paired: the same nets seen two
ways). Two standard errors is the usual ~95% line; with 3 seeds it is a rough screen, not a
test, and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alexnet.experiments.plans import Plan
from alexnet.experiments.runner import view_result_path
from alexnet.runfolder import read_metrics

NOISE_FACTOR = 2.0  # standard errors a difference must exceed to count as real


def crossing(records: Sequence[dict[str, Any]], key: str, threshold: float, x: str = "epoch") -> float | None:
    """Where ``key`` first falls to ``threshold`` or below, in units of ``x`` (``epoch``,
    ``step`` or ``train_seconds_total``), linearly interpolated between the two records around
    the crossing; the first record's ``x`` if it is already below; ``None`` if never reached."""
    previous = None
    for r in records:
        if r[key] <= threshold:
            if previous is None or previous[key] == r[key]:
                return float(r[x])
            frac = (previous[key] - threshold) / (previous[key] - r[key])
            return float(previous[x] + frac * (r[x] - previous[x]))
        previous = r
    return None


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) of the values that exist; how many are missing."""
    present = [float(v) for v in values if v is not None]
    n = len(present)
    mean = sum(present) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1)) if n >= 2 and mean is not None else None
    return {"mean": mean, "std": std, "n": n, "missing": len(values) - n, "values": list(values)}


def compare(base: Sequence[float | None], other: Sequence[float | None], paired: bool = False) -> dict[str, Any]:
    """``other - base``: the difference of means, its standard error and the verdict."""
    if paired:
        diffs = [o - b for b, o in zip(base, other) if b is not None and o is not None]
        s = summarize(diffs)
        diff = s["mean"]
        noise = s["std"] / math.sqrt(s["n"]) if s["std"] is not None else None
    else:
        a, b = summarize(base), summarize(other)
        diff = b["mean"] - a["mean"] if a["mean"] is not None and b["mean"] is not None else None
        ok = a["std"] is not None and b["std"] is not None
        noise = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"]) if ok else None
    return {"diff": diff, "noise": noise, "verdict": verdict(diff, noise)}


def verdict(diff: float | None, noise: float | None) -> str:
    """``larger than seed noise``, ``within seed noise``, or why it cannot be told."""
    if diff is None:
        return "no result (threshold not reached or runs missing)"
    if noise is None:
        return "cannot tell (needs >= 2 seeds per arm)"
    if noise == 0.0:
        return "larger than seed noise" if diff != 0 else "within seed noise"
    return "larger than seed noise" if abs(diff) > NOISE_FACTOR * noise else "within seed noise"


# Per-run numbers: name -> (description, function of the run's records). Errors are fractions.
def _last(key: str) -> Callable[[list[dict[str, Any]]], float | None]:
    return lambda records: records[-1][key] if records else None


RUN_METRICS = {
    "val_top1_err": ("final validation top-1 error", _last("val_top1_err")),
    "train_top1_err": ("final training top-1 error (with augmentation and dropout on)", _last("train_top1_err")),
    "train_seconds": ("training seconds (all epochs)", _last("train_seconds_total")),
}


def analyse(plan: Plan) -> dict[str, Any]:
    """The results of a finished plan: per-arm summaries, comparisons with the baseline arm."""
    exp = plan.experiment
    threshold = plan.threshold
    per_arm: dict[str, dict[str, list[float | None]]] = {}
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for run in plan.runs:
        records = read_metrics(run.folder)
        curves.setdefault(run.arm, []).append(records)
        values = per_arm.setdefault(run.arm, {})
        for name, (_, fn) in RUN_METRICS.items():
            values.setdefault(name, []).append(fn(records))
        if exp.kind == "speed" and threshold is not None:
            for name, x in (("epochs_to_threshold", "epoch"), ("seconds_to_threshold", "train_seconds_total")):
                values.setdefault(name, []).append(crossing(records, "train_top1_err", threshold, x))
        if exp.kind == "dropout":
            last = records[-1] if records else None
            values.setdefault("gap_top1_err", []).append(
                last["val_top1_err"] - last["train_top1_err"] if last else None
            )
            values.setdefault("gap_loss", []).append(last["val_loss"] - last["train_loss"] if last else None)
            if threshold is not None:
                values.setdefault("steps_to_loss", []).append(crossing(records, "train_loss", threshold, "step"))
    if exp.kind == "views":  # arms are views of the same nets
        per_arm = {view: {"val_top1_err": [_view_err(r.folder, view) for r in plan.runs]} for view in exp.views}
    primary = {
        "final": ["val_top1_err"],
        "speed": ["epochs_to_threshold", "seconds_to_threshold"],
        "dropout": ["gap_top1_err", "steps_to_loss", "val_top1_err"],
        "views": ["val_top1_err"],
    }[exp.kind]
    arms = {arm: {name: summarize(v) for name, v in values.items()} for arm, values in per_arm.items()}
    comparisons = []
    for arm in per_arm:
        if arm == exp.baseline:
            continue
        for metric in primary:
            c = compare(per_arm[exp.baseline][metric], per_arm[arm][metric], paired=exp.kind == "views")
            comparisons.append({"arm": arm, "baseline": exp.baseline, "metric": metric, **c})
    result: dict[str, Any] = {
        "experiment": exp.name, "section": exp.section, "claim": exp.claim, "data": plan.data,
        "budget": plan.budget_name, "budget_detail": plan.budget.describe(), "seeds": len(plan.seeds),
        "model": plan.runs[0].config.recipe.model, "baseline": exp.baseline, "primary": primary,
        "threshold": threshold, "note": exp.note, "paper": exp.paper, "arms": arms, "comparisons": comparisons,
        "runs": [str(r.folder) for r in plan.runs],
    }  # fmt: skip
    if exp.kind == "speed":
        result["ratio"] = _ratio(arms, "epochs_to_threshold", exp.baseline)
        result["ratio_seconds"] = _ratio(arms, "seconds_to_threshold", exp.baseline)
    result["curves"] = {arm: [[_curve_point(r) for r in recs] for recs in runs] for arm, runs in curves.items()}
    return result


def _ratio(arms: dict[str, dict[str, Any]], metric: str, baseline: str) -> dict[str, float | None]:
    """Each arm's mean over the baseline's mean (Figure 1's "six times faster")."""
    base = arms[baseline][metric]["mean"]
    return {
        arm: (m[metric]["mean"] / base if base and m[metric]["mean"] is not None else None) for arm, m in arms.items()
    }


def _curve_point(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("epoch", "step", "train_loss", "train_top1_err", "val_loss", "val_top1_err", "train_seconds_total")
    return {k: r[k] for k in keys if k in r}


def _view_err(folder: Path, view: str) -> float | None:
    path = view_result_path(folder, view)
    return json.loads(path.read_text())["top1_err"] if path.is_file() else None
