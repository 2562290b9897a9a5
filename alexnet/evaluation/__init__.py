"""Using trained models: top-1/top-5 error on a dataset, and predictions for image files.

A model to use is either an ``alexnet`` checkpoint (from ``alexnet train``) or a bare
torchvision AlexNet ``state_dict`` (such as torchvision's own ImageNet weights file), which
loads into ``alexnet-owt`` with torchvision's ImageNet preprocessing.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet import models
from alexnet.checkpoint import KIND, Checkpoint, checkpoint_path, read_raw
from alexnet.data import BatchPlan, Dataset, open_dataset
from alexnet.data.dataset import SPLITS
from alexnet.data.pipeline import InputNorm, InputPipeline
from alexnet.data.resize import MAX_ENLARGEMENT, fit_input_size
from alexnet.errors import UserError
from alexnet.evaluation.metrics import Meter, evaluate
from alexnet.io import atomic_write_text
from alexnet.precision import resolve_precision
from alexnet.runtime import default_workers, resolve_device, tune_cpu_allocator

# torchvision's ImageNet preprocessing (its weights were trained with these), in 0-255 units.
TORCHVISION_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCHVISION_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# and its geometry: short side 256, centre 224 crop.
TORCHVISION_IMAGE_SIZE, TORCHVISION_CROP = 256, 224


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names in label order (sorted WNIDs), shipped in the package."""
    text = resources.files("alexnet").joinpath("resources/imagenet_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000
    return names


@dataclass
class LoadedModel:
    """A model ready for inference and the input convention it was trained with."""

    model: nn.Module
    name: str
    classes: tuple[str, ...]
    channels: int
    image_size: int  # images are resized/cropped to this side first (256 for ImageNet)
    crop: int  # then centre-cropped to this (227)
    norm: InputNorm
    source: str
    data_source: str | None = None  # the --data the model was trained on, if known
    # Started from other weights (--init-from): its data was fitted to their input size, so
    # evaluation fits data the same way (alexnet.data.resize).
    fits_input: bool = False


def _display_classes(classes: list[str], num_classes: int) -> tuple[str, ...]:
    """Human-readable class names; ImageNet WNIDs become names from the shipped table."""
    if num_classes == 1000 and (not classes or all(c.startswith("n") and c[1:].isdigit() for c in classes)):
        return imagenet_class_names()
    return tuple(classes) if classes else tuple(str(i) for i in range(num_classes))


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    """Load an alexnet checkpoint or a torchvision AlexNet state_dict for inference."""
    given, path = Path(path), checkpoint_path(path)  # a run folder stays the model's name
    raw = read_raw(path)
    if isinstance(raw, dict) and raw.get("kind") != KIND and "features.0.weight" in raw:
        return _load_torchvision_state_dict(raw, given, device)
    ckpt = Checkpoint.from_dict(raw, str(path))
    model = ckpt.build_model().to(device).eval()
    data_source = ckpt.config.get("data")
    loaded = LoadedModel(
        model=model, name=ckpt.model_name, classes=_display_classes(list(ckpt.classes), ckpt.num_classes),
        channels=ckpt.data.channels, image_size=ckpt.data.image_size, crop=ckpt.data.crop,
        norm=ckpt.data.norm, source=str(given), data_source=data_source if isinstance(data_source, str) else None,
        fits_input=bool(ckpt.config.get("init_from")),
    )  # fmt: skip
    _check_takes_own_input(loaded)
    return loaded


def _check_takes_own_input(m: LoadedModel) -> None:
    """One line, not a traceback at the first image, when a checkpoint's input convention (its
    channels, its crop) does not fit its own network: a damaged or hand-edited file."""
    x = torch.zeros(1, m.channels, m.crop, m.crop, device=next(m.model.parameters()).device)
    try:
        with torch.inference_mode():
            m.model(x)
    except RuntimeError:
        raise UserError(f"{m.source} is a damaged checkpoint: its network does not take the {m.channels}-channel "
                        f"{m.crop}x{m.crop} images its data settings describe") from None  # fmt: skip


def _load_torchvision_state_dict(state: dict[str, Any], path: Path, device: torch.device) -> LoadedModel:
    num_classes = state["classifier.6.weight"].shape[0] if "classifier.6.weight" in state else 1000
    model = models.create("alexnet-owt", num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} looks like a torchvision AlexNet state_dict but does not fit: {str(e).splitlines()[0]}") from None
    return LoadedModel(
        model=model.to(device).eval(), name="alexnet-owt", classes=_display_classes([], num_classes), channels=3,
        image_size=TORCHVISION_IMAGE_SIZE, crop=TORCHVISION_CROP, norm=InputNorm(TORCHVISION_MEAN, TORCHVISION_STD),
        source=str(path),
    )  # fmt: skip


def evaluate_checkpoints(
    paths: list[str],
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

    ``data`` defaults to the source the first checkpoint was trained on. ``views`` (see
    :data:`alexnet.data.presets.EVAL_VIEWS`): ``centre`` crop, ``flip`` averages the softmax over
    it and its mirror, ``ten-crop`` over the ten patches of section 4.1.
    ``per_class_file``: also write each class's images and top-1/top-5 accuracy there (CSV, or
    JSON if the name ends in ``.json``). ``workers``: decoding threads for prepared datasets
    (default: cores, at most 8).
    """
    tune_cpu_allocator()
    device = resolve_device(device_name)
    loaded = [load_model(p, device) for p in paths]
    precision = resolve_precision(precision_name, device, loaded[0].name)  # its model's fastest
    data = data or loaded[0].data_source
    if not data:
        raise UserError(f"{paths[0]} does not say what data it was trained on; pass --data")
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
        if m.crop != first.crop or not _same_norm(m.norm, first.norm):
            raise UserError(f"{m.source} was trained with other input statistics or crop than {first.source}")
        _check_input_size(m, dataset, data)
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


def fit_input_to_model(m: LoadedModel, dataset: Dataset, data: str) -> tuple[Dataset, str | None]:
    """``dataset`` cropped or resized to the crop (and mean image side) of a model started from
    other weights, as its training fitted its data to them (``alexnet.data.resize``), with the
    line that says so; unchanged for other models, when the crops already fit, or when the
    images would have to be enlarged past sense."""
    side, crop = dataset.info.image_size, dataset.eval_crop
    if not m.fits_input or (crop == m.crop and (m.norm.mean_image is None or side == m.image_size)):
        return dataset, None
    if m.image_size / side > MAX_ENLARGEMENT:
        return dataset, None  # _check_input_size says what does not fit
    how = "cropped" if side == m.image_size else f"resized to {m.image_size} px and cropped"
    note = f"input size: {m.source} takes {m.crop} px crops; the {side} px images of {data} are {how} to fit"
    return fit_input_size(dataset, m.image_size, m.crop), note


def _check_input_size(m: LoadedModel, dataset: Dataset, data: str) -> None:
    """Refuse data whose crops the model cannot take (a 32 px model on 64 px images), in one line."""
    side, crop = dataset.info.image_size, dataset.eval_crop
    if m.norm.mean_image is not None and tuple(m.norm.mean_image.shape[-2:]) != (side, side):
        raise UserError(f"{m.source} was trained on {m.image_size} px images (its mean image is that size) but {data} "
                        f"has {side} px images; evaluate it on data of its own size")  # fmt: skip
    x = torch.zeros(1, m.channels, crop, crop, device=next(m.model.parameters()).device)
    try:
        with torch.inference_mode():
            m.model(x)
    except RuntimeError:
        raise UserError(f"{m.source} takes {m.crop} px crops (trained on {m.image_size} px images) but {data} gives "
                        f"{crop} px crops; evaluate it on data of its own size") from None


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


def _same_norm(a: InputNorm, b: InputNorm) -> bool:
    if (a.mean_image is None) != (b.mean_image is None):
        return False
    return (a.mean, a.std) == (b.mean, b.std) and (a.mean_image is None or torch.equal(a.mean_image, b.mean_image))


# Predictions live in their own module; these names stay importable from here.
from alexnet.evaluation.predict import load_image, predict

__all__ = ["LoadedModel", "Meter", "evaluate", "evaluate_checkpoints", "load_image", "load_model", "predict",
           "write_per_class"]  # fmt: skip
