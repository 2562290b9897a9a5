"""Activations of a trained model over a dataset split: fc7 features, top-5 predictions.

Section 6.1 (Figure 4) uses "the feature activations induced by an image at the last,
4096-dimensional hidden layer" (fc7, after its ReLU): :func:`extract_features` streams them (or
any weight layer's output) to a ``.npy`` memmap in bounded memory, and :func:`predict_split`
gives every image's top-5 classes for the report. Both see the images exactly as
``alexnet eval`` does (the checkpoint's own normalisation, centre crop).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from alexnet.data import BatchPlan, open_dataset
from alexnet.data.dataset import Dataset
from alexnet.data.pipeline import InputPipeline
from alexnet.errors import UserError
from alexnet.evaluation.loading import LoadedModel, check_dataset_order, fit_input_to_model, load_model
from alexnet.io import atomic_path, atomic_write, reserve_space
from alexnet.precision import resolve_precision
from alexnet.runtime import autocast, resolve_device

FEATURE_LAYER = "fc7"  # the paper's "last hidden layer" (section 6.1)
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@dataclass
class Session:
    """A model and the dataset it is applied to, checked to fit each other."""

    loaded: LoadedModel
    dataset: Dataset
    data: str
    device: torch.device
    precision: str
    pipeline: InputPipeline


def open_session(run: str | Path, data: str | None = None, device_name: str = "auto",
                 precision_name: str = "auto") -> Session:  # fmt: skip
    """Load ``run``'s model and open ``data`` (default: the data it was trained on)."""
    device = resolve_device(device_name)
    loaded = load_model(run, device)
    return session_for(loaded, data, resolve_precision(precision_name, device, loaded.name))


def session_for(loaded: LoadedModel, data: str | None, precision: str, same_classes: bool = True) -> Session:
    """A loaded model (on its device) and ``data`` (default: the data it was trained on), checked
    to fit each other (``same_classes=False``: any classes, for work on features such as probes)."""
    run, device = loaded.source, next(loaded.model.parameters()).device
    check_dataset_order(loaded)
    data = data or loaded.data_source
    if not data:
        raise UserError(f"{run} does not say what data it was trained on; pass --data")
    dataset, _ = fit_input_to_model(loaded, open_dataset(data, workers=min(os.cpu_count() or 1, 8)), data)
    if (same_classes and len(loaded.classes) != dataset.info.num_classes) or loaded.channels != dataset.info.channels:
        raise UserError(
            f"{loaded.source} expects {len(loaded.classes)} classes of {loaded.channels}-channel images but {data} has "
            f"{dataset.info.num_classes} classes of {dataset.info.channels}-channel images; pass the --data it was trained on"
        )
    if loaded.crop != dataset.eval_crop:
        raise UserError(f"{loaded.source} was trained on {loaded.crop}x{loaded.crop} crops but {data} gives "
                        f"{dataset.eval_crop}x{dataset.eval_crop}; pass the --data it was trained on")  # fmt: skip
    pipeline = InputPipeline(dataset, device, channels_last=False, seed=0, norm=loaded.norm)
    return Session(loaded, dataset, data, device, precision, pipeline)


def check_split(session: Session, split: str) -> int:
    """Number of images in ``split``; a :class:`UserError` if it is unknown or empty."""
    if split not in ("train", "val"):
        raise UserError(f"unknown split {split!r}; use train or val")
    n = session.dataset.num_samples(split)
    if n == 0:
        raise UserError(f"the {split} split of {session.data} is empty; nothing to compute")
    return n


def extractor(model: nn.Module, layer: str = FEATURE_LAYER) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from normalised input batches to ``N x D`` activations of ``layer``.

    ``fc7`` is the paper's feature (after its ReLU, ``forward_features``); other layers give
    the output of that weight layer, flattened.
    """
    if layer not in LAYERS:
        raise UserError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
    if layer == FEATURE_LAYER:
        return lambda x: model.forward_features(x)  # type: ignore[operator]
    module = model.layers_by_role()[layer]  # type: ignore[operator]

    def run(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            model(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)

    return run


def _batches(session: Session, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for images, labels in session.dataset.batches(split, BatchPlan(batch_size)):
        yield session.pipeline.eval(images), labels


@torch.inference_mode()
def features_of(session: Session, images: torch.Tensor, layer: str = FEATURE_LAYER) -> torch.Tensor:
    """float32 activations of uint8 ``N,C,H,W`` images (stored size; centre-cropped here)."""
    model = session.loaded.model.eval()
    with autocast(session.device, session.precision):
        return extractor(model, layer)(session.pipeline.eval(images)).float().cpu()


@torch.inference_mode()
def extract_features(session: Session, split: str, out: str | Path, layer: str = FEATURE_LAYER,
                     batch_size: int = 250, progress: bool = True, dtype: type = np.float32) -> dict[str, object]:  # fmt: skip
    """Write ``layer``'s activations of every image of ``split`` to ``out`` (``N x D`` ``.npy`` of
    ``dtype``, float32 or float16, filled batch by batch through a memmap, so memory stays one
    batch) and the labels to ``<out stem>.labels.npy``. Both files appear only when complete
    (temporary names, then rename). float16 clips values beyond its range rather than making
    them infinite. Returns a summary (path, shape, seconds)."""
    import time

    n = check_split(session, split)
    run = extractor(session.loaded.model.eval(), layer)
    out = Path(out)
    if out.suffix != ".npy":
        raise UserError(f"--out must end in .npy (a NumPy array file), got {out}")
    labels_path = out.with_name(out.stem + ".labels.npy")
    labels = np.empty(n, dtype=np.int64)
    started = time.perf_counter()
    array = None
    with atomic_path(out) as tmp:
        bar = tqdm(total=n, unit="img", desc=f"{layer} {split}", disable=not progress, dynamic_ncols=True)
        pos = 0
        for x, y in _batches(session, split, batch_size):
            with autocast(session.device, session.precision):
                feats = run(x).float().cpu().numpy()
            if array is None:  # the width is known after the first batch
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, feats.shape[1]))
                reserve_space(tmp)  # a full disk is one error now, not SIGBUS on a page of the memmap later
            if dtype == np.float16:
                feats = np.clip(feats, np.finfo(np.float16).min, np.finfo(np.float16).max)
            array[pos : pos + len(feats)] = feats
            labels[pos : pos + len(feats)] = y.numpy()
            pos += len(feats)
            bar.update(len(feats))
        bar.close()
        assert array is not None and pos == n
        array.flush()
        shape = array.shape
        del array
        _save_atomic(labels_path, labels)
    return {"features": str(out), "labels": str(labels_path), "shape": list(shape), "layer": layer, "split": split,
            "data": session.data, "seconds": time.perf_counter() - started}  # fmt: skip


@torch.inference_mode()
def predict_split(session: Session, split: str, batch_size: int = 250, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (``N``), top-``k`` classes (``N x k``, best first) and their softmax
    probabilities (``N x k``) of every image of ``split``, centre crop."""
    check_split(session, split)
    model = session.loaded.model.eval()
    labels, classes, probs = [], [], []
    for x, y in _batches(session, split, batch_size):
        with autocast(session.device, session.precision):
            p = model(x).float().softmax(dim=1)
        top = p.topk(min(k, p.shape[1]), dim=1)
        labels.append(y.numpy())
        classes.append(top.indices.cpu().numpy())
        probs.append(top.values.cpu().numpy())
    return np.concatenate(labels), np.concatenate(classes), np.concatenate(probs)


def images_at(dataset: Dataset, split: str, indices: Sequence[int]) -> torch.Tensor:
    """uint8 ``N,C,H,W`` images of the samples ``indices`` of ``split`` (stored size)."""
    idx = torch.as_tensor(list(indices), dtype=torch.int64)
    splits = getattr(dataset, "splits", None)
    if splits is not None:  # in-memory sets
        return splits[split][0][idx]
    read = getattr(dataset, "read", None)
    if read is not None:  # prepared datasets
        return read(split, idx)[0].contiguous()
    raise UserError(f"{dataset.info.name} cannot look up single images")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
