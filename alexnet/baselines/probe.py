"""Linear probes: how linearly separable the classes are in each layer (Alain & Bengio 2016).

The project's linear SVM (:mod:`alexnet.baselines.svm`) is fitted on each layer's activations
(after its ReLU) of a sample of training images and scored on the whole validation split, beside
the 2011 features on the same images: HOG + linear SVM and raw pixels + linear SVM. Where a
layer's accuracy passes HOG's, learned features overtake hand-designed ones.

A convolutional layer's maps are average-pooled to the largest square grid that keeps it within
``max_dims`` values (conv1 of the paper net: 96 x 55 x 55 -> 96 x 4 x 4), and pixels the same
way, so that every probe is an SVM of a few thousand inputs. Everything is computed in one
pass over the images; the result is written to ``RUN/probe/probe.json`` for ``alexnet report``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet.baselines.features import Extractor, Pixels
from alexnet.baselines.pipeline import BaselineConfig, make_extractor
from alexnet.baselines.svm import LinearSVM, SvmParams
from alexnet.data import BatchPlan
from alexnet.data.presets import centre_crop
from alexnet.errors import UserError
from alexnet.evaluation.features import Session, check_split
from alexnet.evaluation.retrieval import identity
from alexnet.io import atomic_write_json
from alexnet.runfolder import run_folder_lock
from alexnet.runtime import autocast

PROBE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
BASELINE_ROWS = ("hog", "pixels")
PROBE_FILE = Path("probe") / "probe.json"


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how."""

    layers: tuple[str, ...] = PROBE_LAYERS
    train_images: int = 10_000  # a fixed random sample of the training split (0: all of it)
    max_dims: int = 2048  # inputs per probe: conv maps and pixels are average-pooled to fit
    l2: float = SvmParams.l2
    # L-BFGS iterations: a layer's 10,000 x 2,048 probe is linearly separable (train accuracy 100%)
    # long before the baselines' 300; fewer is 3x faster (docs/RESULTS.md has both tables).
    max_iter: int = 100
    seed: int = 0
    batch_size: int = 250


@dataclass
class ProbeRow:
    """One probe: what it was fitted on and how well it separates the classes."""

    name: str
    dims: int
    shape: str  # what the features are, e.g. "64x6x6 (pooled from 64x13x13)"
    train_acc: float = 0.0
    test_acc: float = 0.0
    seconds: float = 0.0


@dataclass
class ProbeResult:
    """Every row, and where the numbers come from."""

    rows: list[ProbeRow]
    data: str
    model: str
    train_images: int
    val_images: int
    identity: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        return cls(**(d | {"rows": [ProbeRow(**r) for r in d["rows"]]}))


def pooled_side(channels: int, side: int, max_dims: int) -> int:
    """The grid a ``channels x side x side`` map is average-pooled to: as fine as ``max_dims`` allows."""
    return max(1, min(side, math.isqrt(max(max_dims // channels, 1))))


def _pool(x: torch.Tensor, max_dims: int) -> torch.Tensor:
    """``N x D`` features of a batch of maps (pooled, see :func:`pooled_side`) or vectors."""
    if x.ndim == 4:
        s = pooled_side(x.shape[1], x.shape[-1], max_dims)
        x = F.adaptive_avg_pool2d(x, s) if s < x.shape[-1] else x
    return x.flatten(1).float()


def _activation_after(model: nn.Module, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation that follows ``layer`` in its Sequential (ReLU or tanh), as a function."""
    for parent in model.modules():
        children = list(parent.children())
        for i, child in enumerate(children[:-1]):
            if child is layer and isinstance(children[i + 1], nn.Tanh):
                return torch.tanh
    return torch.relu


def layer_features(model: nn.Module, layers: Sequence[str], max_dims: int) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A function from a normalised input batch to each of ``layers``' pooled activations."""
    roles = model.layers_by_role()  # type: ignore[operator]
    unknown = [n for n in layers if n not in roles]
    if unknown:
        raise UserError(f"unknown layer {', '.join(unknown)}; this model has {', '.join(roles)}")

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}

        def hook(name: str, act: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., None]:
            return lambda _m, _i, o: out.__setitem__(name, _pool(act(o.float()), max_dims))

        handles = [roles[n].register_forward_hook(hook(n, _activation_after(model, roles[n]))) for n in layers]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
        return out

    return run


def _describe(name: str, before: tuple[int, ...], after: int, max_dims: int) -> str:
    if len(before) == 3:
        c, side = before[0], before[-1]
        s = pooled_side(c, side, max_dims)
        return f"{c}x{s}x{s}" + (f" (pooled from {c}x{side}x{side})" if s < side else "")
    return str(after)


class _Store:
    """Preallocated float16 feature matrices of one split, filled batch by batch."""

    def __init__(self, n: int) -> None:
        self.n, self.pos = n, 0
        self.arrays: dict[str, np.ndarray] = {}
        self.labels = np.empty(n, dtype=np.int64)

    def add(self, feats: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        take = min(len(labels), self.n - self.pos)
        for name, f in feats.items():
            if name not in self.arrays:
                self.arrays[name] = np.empty((self.n, f.shape[1]), dtype=np.float16)
            self.arrays[name][self.pos : self.pos + take] = f[:take].clamp(-65000, 65000).numpy()
        self.labels[self.pos : self.pos + take] = labels[:take].numpy()
        self.pos += take


@torch.no_grad()  # not inference_mode: HOG fills its tensors from worker threads, outside that (thread-local) mode
def _extract(session: Session, split: str, n: int, cfg: ProbeConfig, extractors: dict[str, Extractor],
             progress: bool) -> _Store:  # fmt: skip
    model = session.loaded.model.eval()
    run = layer_features(model, cfg.layers, cfg.max_dims)
    store = _Store(n)
    crop = session.loaded.crop
    plan = BatchPlan(cfg.batch_size, shuffle=split == "train", seed=cfg.seed)
    with tqdm(total=n, unit="img", desc=f"probe features {split}", disable=not progress, dynamic_ncols=True) as bar:
        for images, labels in session.dataset.batches(split, plan):
            with autocast(session.device, session.precision):
                feats = run(session.pipeline.eval(images))
            feats = {k: v.cpu() for k, v in feats.items()}
            pixels = centre_crop(images.contiguous(), crop)
            for name, ex in extractors.items():
                feats[name] = _pool(ex.transform(pixels).float(), cfg.max_dims) if name == "hog" else \
                    _pool(pixels.float() / 255.0, cfg.max_dims)  # fmt: skip
            store.add(feats, labels)
            bar.update(min(len(labels), n - bar.n))
            if store.pos >= n:
                break
    return store


def probe(session: Session, cfg: ProbeConfig = ProbeConfig(), progress: bool = True,
          log: Callable[[str], None] = print) -> ProbeResult:  # fmt: skip
    """Fit and score a linear SVM on each layer of ``cfg.layers`` and on HOG and pixels."""
    n_train = check_split(session, "train")
    n_train = min(n_train, cfg.train_images) if cfg.train_images else n_train
    n_val = check_split(session, "val")
    side, channels = session.loaded.crop, session.loaded.channels
    extractors: dict[str, Extractor] = {
        "hog": make_extractor("hog", side, BaselineConfig(data=session.data, features="hog"), channels),
        "pixels": Pixels(),
    }
    train = _extract(session, "train", n_train, cfg, extractors, progress)
    val = _extract(session, "val", n_val, cfg, extractors, progress)
    shapes = _layer_shapes(session, cfg)
    rows = []
    classes = session.dataset.info.num_classes  # the data's: a probe may look at other classes than the model's
    for name in (*cfg.layers, *BASELINE_ROWS):
        started = time.perf_counter()
        x_train = np.asarray(train.arrays[name], dtype=np.float32)
        svm = LinearSVM(SvmParams(l2=cfg.l2, max_iter=cfg.max_iter)).fit(x_train, train.labels, classes)
        train_acc = float((svm.predict(x_train).numpy() == train.labels).mean())
        test_acc = float((svm.predict(np.asarray(val.arrays[name], dtype=np.float32)).numpy() == val.labels).mean())
        rows.append(ProbeRow(name, x_train.shape[1], shapes.get(name, str(x_train.shape[1])), train_acc, test_acc,
                             time.perf_counter() - started))  # fmt: skip
        log(f"  {name:<7} {x_train.shape[1]:>6} dims  test accuracy {test_acc:.2%}")
    return ProbeResult(rows, session.data, session.loaded.name, n_train, n_val)


def _layer_shapes(session: Session, cfg: ProbeConfig) -> dict[str, str]:
    """What each probe is fitted on (from one image's activations)."""
    model = session.loaded.model.eval()
    roles = model.layers_by_role()
    seen: dict[str, tuple[int, ...]] = {}
    handles = [roles[n].register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, tuple(o.shape[1:])))
               for n in cfg.layers]  # fmt: skip
    crop = session.loaded.crop
    try:
        with torch.inference_mode():
            model(torch.zeros(1, session.loaded.channels, crop, crop, device=session.device))
    finally:
        for h in handles:
            h.remove()
    shapes = {n: _describe(n, s, int(np.prod(s)), cfg.max_dims) for n, s in seen.items()}
    shapes["hog"] = "HOG, 2 cell sizes"
    pixels = (session.loaded.channels, crop, crop)
    shapes["pixels"] = _describe("pixels", pixels, int(np.prod(pixels)), cfg.max_dims)
    return shapes


def probe_path(run: str | Path) -> Path:
    """Where ``alexnet probe`` keeps its result for ``alexnet report``."""
    return Path(run) / PROBE_FILE


def save_probe(run: str | Path, session: Session, result: ProbeResult) -> Path:
    """Write ``result`` (with the checkpoint and data it came from) to :func:`probe_path`."""
    result.identity = identity(session, run, "val", ",".join(r.name for r in result.rows))
    path = probe_path(run)
    with run_folder_lock(run, flag="RUN"):
        atomic_write_json(path, result.to_dict())
    return path
