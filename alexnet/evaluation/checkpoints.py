"""Top-1/top-5 error of one checkpoint or an ensemble on a dataset split, and per-class files.

The models are loaded by :func:`alexnet.evaluation.loading.load_model` and see the data as
training did (their checkpoint's normalisation, centre crop or the test views of section 4.1).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import torch

from alexnet.data import BatchPlan, open_dataset
from alexnet.data.dataset import SPLITS
from alexnet.data.pipeline import InputPipeline
from alexnet.errors import UserError
from alexnet.evaluation.loading import (
    LoadedModel,
    check_dataset_order,
    check_input_size,
    fit_input_to_model,
    load_model,
)
from alexnet.evaluation.metrics import evaluate
from alexnet.io import atomic_write_text
from alexnet.precision import resolve_precision
from alexnet.runtime import default_workers, resolve_device, tune_cpu_allocator


def evaluate_checkpoints(
    paths: Sequence[str | LoadedModel],
    data: str | None = None,
    split: str = "val",
    batch_size: int = 250,
    device_name: str = "auto",
    precision_name: str = "auto",
    views: str = "centre",
    per_class_file: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 error of one checkpoint or of the softmax-averaged ensemble of several.

    ``paths``: checkpoint files or run folders, or models already loaded on the device
    ``device_name`` names. ``data`` defaults to the source the first checkpoint was trained on. ``views`` (see
    :data:`alexnet.data.presets.EVAL_VIEWS`): ``centre`` crop, ``flip`` averages the softmax over
    it and its mirror, ``ten-crop`` over the ten patches of section 4.1.
    ``per_class_file``: also write each class's images and top-1/top-5 accuracy there (CSV, or
    JSON if the name ends in ``.json``). ``workers``: decoding threads for prepared datasets
    (default: cores, at most 8).
    """
    tune_cpu_allocator()
    device = resolve_device(device_name)
    loaded = [p if isinstance(p, LoadedModel) else load_model(p, device) for p in paths]
    for m in loaded:
        check_dataset_order(m)
    precision = resolve_precision(precision_name, device, loaded[0].name)  # its model's fastest
    data = data or loaded[0].data_source
    if not data:
        raise UserError(f"{loaded[0].source} does not say what data it was trained on; pass --data")
    dataset = open_dataset(data, workers=default_workers() if workers is None else workers)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use {' or '.join(SPLITS)}")
    if dataset.num_samples(split) == 0:
        raise UserError(f"{data} has no {split} images: there is nothing to evaluate")
    first = loaded[0]
    dataset, fitted = fit_input_to_model(first, dataset, data)
    for m in loaded:
        if len(m.classes) != dataset.info.num_classes or m.channels != dataset.info.channels:
            raise UserError(
                f"{m.source} expects {len(m.classes)} classes of {m.channels}-channel images but {data} has "
                f"{dataset.info.num_classes} classes of {dataset.info.channels}-channel images"
            )
        if m.crop != first.crop or not m.norm.same_as(first.norm):
            raise UserError(f"{m.source} was trained with other input statistics or crop than {first.source}")
        check_input_size(m, dataset, data)
    pipeline = InputPipeline(dataset, device, channels_last=True, seed=0, norm=first.norm)
    for m in loaded:
        m.model.to(memory_format=torch.channels_last)
    transform, crops = pipeline.eval_views(views)
    batches = dataset.batches(split, BatchPlan(batch_size))
    counts = torch.zeros(dataset.info.num_classes, 3, dtype=torch.int64, device=device) if per_class_file else None
    meter = evaluate([m.model for m in loaded], batches, transform, precision, device, crops=crops, per_class=counts)
    summary = meter.summary()
    result = {
        "top1_err": summary["top1_err"], "top5_err": summary["top5_err"], "loss": summary["loss"],
        "n": meter.count, "crops": crops, "models": [m.source for m in loaded], "data": data, "split": split,
        "synthetic": dataset.info.synthetic,
    }  # fmt: skip
    if fitted:
        result["input_size"] = fitted
    if per_class_file and counts is not None:
        ids = getattr(dataset, "class_ids", dataset.info.classes)
        write_per_class(per_class_file, counts.cpu(), dataset.info.classes, ids)
        result["per_class_file"] = per_class_file
    return result


def write_per_class(path: str, counts: torch.Tensor, classes: tuple[str, ...], ids: tuple[str, ...]) -> None:
    """Atomically write per-class results (``counts``: images, top-1 hits, top-5 hits per class)
    as CSV, or as a JSON list if ``path`` ends in ``.json``. Classes without images get empty
    (CSV) or null (JSON) accuracies."""
    rows = []
    for label, (n, top1, top5) in enumerate(counts.tolist()):
        rows.append({
            "label": label, "id": ids[label], "class": classes[label], "images": n,
            "top1_acc": top1 / n if n else None, "top5_acc": top5 / n if n else None,
        })  # fmt: skip
    if path.lower().endswith(".json"):
        text = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["label"], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            cells = {k: "" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()}
            writer.writerow(cells)
        text = buf.getvalue()
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise UserError(f"cannot write the per-class file {path}: {e.strerror or e}") from None
