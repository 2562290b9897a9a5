"""A fitted baseline as a run folder: fit in resumable stages, evaluate, predict.

``RUN/`` holds (all written atomically; nothing is pickled):

* ``config.json``: ``kind`` = :data:`KIND`, the features, data source, seed and options, the
  classes and the input geometry;
* ``extractor.json`` + ``extractor.npz``: the fitted feature extractor (e.g. kernel-map
  landmarks and projection; sift-fv's PCA means/directions and GMM weights/means/variances);
* ``features/{train,val}.npy`` (+ ``-labels.npy``): the features, written through a memory
  map into a temporary file that is renamed when complete, so a killed run never leaves a
  half-written file under the final name, and memory holds one batch, not the split;
* ``classifier.npz``: the one-vs-rest linear SVM (weights and biases);
* ``metrics.json``: top-1/top-5 error on the validation (test) split, training error, timings.

A re-run with the same ``--out`` and the same settings skips every finished stage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.baselines.features import Extractor, Hog, Pixels, RbfNystroem
from alexnet.baselines.fisher import SiftFisher
from alexnet.baselines.hog import HogParams
from alexnet.baselines.runfiles import (
    RESTART,
    image_batches,
    is_number,
    load_features,
    load_npz,
    read_json,
    reading,
    save_npz,
    write_features,
)
from alexnet.baselines.svm import LinearSVM, SvmParams
from alexnet.data import BatchPlan, open_dataset
from alexnet.data.dataset import Dataset
from alexnet.data.pipeline import MAX_IMAGE_SIDE
from alexnet.data.presets import centre_crop
from alexnet.errors import UserError
from alexnet.io import atomic_write_json
from alexnet.runfolder import BASELINE, BASELINE_KIND, BASELINE_METRICS, CONFIG, LOCK_NAME, run_folder_lock, run_kind

KIND = BASELINE_KIND
FORMAT_VERSION = 1
FEATURES = ("raw", "hog", "hog-rbf", "sift-fv")
SYSTEMS = {  # short names for tables
    "raw": "pixels + linear SVM",
    "hog": "HOG + linear SVM",
    "hog-rbf": "HOG + pixels, RBF kernel map + linear SVM",
    "sift-fv": "SIFT + Fisher vectors + linear SVM",
}
# SVM weight decay per pipeline, as measured on Fashion-MNIST (docs/RESULTS.md, "2011 vs 2012"):
# the 3,000-dim kernel map overfits at 1e-4 (train 2.1% / test 10.5% error) and does better
# at 1e-3 (2.9% / 9.3%); the linear pipelines were measured at 1e-4. sift-fv's 10,240 Fisher-vector
# dims separate the training set at 1e-4 (train error 0) and did better at 1e-3 on a held-out part
# of the training set (89.08% vs 88.91%; docs/RESULTS.md).
DEFAULT_L2 = {"raw": 1e-4, "hog": 1e-4, "hog-rbf": 1e-3, "sift-fv": 1e-3}
DESCRIPTIONS = {
    "raw": "pixels -> linear SVM (the floor)",
    "hog": "HOG at 2 cell sizes (Dalal & Triggs 2005) -> linear SVM",
    "hog-rbf": "HOG at 2 cell sizes + pixels -> RBF kernel map (Nystroem) -> linear SVM",
    "sift-fv": "dense RootSIFT at 3 scales (+ colour statistics) -> PCA -> GMM -> improved Fisher vectors, "
    "1x1 + 2x2 pyramid (Sanchez & Perronnin 2011) -> linear SVM",
}


@dataclass(frozen=True)
class BaselineConfig:
    """Everything that determines a fitted baseline (``out`` and ``progress`` excepted)."""

    data: str
    features: str
    seed: int = 0
    l2: float = SvmParams.l2
    max_iter: int = SvmParams.max_iter
    landmarks: int = 3000  # hog-rbf: kernel-map dimension (Nystroem landmarks)
    components: int = SiftFisher.COMPONENTS  # sift-fv: Gaussians of the GMM vocabulary
    pca_dims: int = SiftFisher.PCA_DIMS  # sift-fv: descriptor dimensions after PCA
    batch_size: int = 1000


def is_baseline_run(path: str | Path) -> bool:
    """Whether ``path`` is a baseline run folder (so eval/predict/train can dispatch on it)."""
    return run_kind(path) == BASELINE


def hog_scales(side: int) -> tuple[HogParams, ...]:
    """HOG on a 7x7 and a 4x4 grid of cells, 2x2-cell blocks, 9 orientations (Dalal & Triggs'
    bins and blocks): 4 px and 7 px cells on 28 px images. A fine and a coarse grid side by side,
    like the spatial pyramids of the 2006-2011 systems."""
    return tuple(HogParams(orientations=9, cell=max(2, side // cells), block=2) for cells in (7, 4))


def make_extractor(features: str, side: int, cfg: BaselineConfig, channels: int = 1) -> Extractor:
    """A new (unfitted) extractor for ``features`` on square ``channels``-channel images of ``side`` pixels."""
    if features == "raw":
        return Pixels()
    if features == "hog":
        return Hog(hog_scales(side))
    if features == "hog-rbf":
        return RbfNystroem(Hog(hog_scales(side), pixels=True, balance=True), cfg.landmarks, cfg.seed)
    if features == "sift-fv":
        return SiftFisher(side, channels, cfg.components, cfg.pca_dims, cfg.seed)
    raise UserError(f"unknown features {features!r}; use one of: {', '.join(FEATURES)}")


def load_extractor(features: str, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Extractor:
    loader = {"raw": Pixels, "hog": Hog, "hog-rbf": RbfNystroem, "sift-fv": SiftFisher}[features]
    return loader.load(config, arrays)


# The validation predictions of a fitted baseline (read by `alexnet report`).
PREDICTIONS = "predictions.npz"


def _check_dataset(ds: Dataset, source: str) -> None:
    if ds.info.num_classes < 2:
        raise UserError(f"{source} has {ds.info.num_classes} class; a classifier needs at least 2")
    for split in ("train", "val"):
        if ds.num_samples(split) == 0:
            raise UserError(f"{source}: the {split} split is empty")
    # The labels without decoding images, where the source holds them (in-memory and prepared sets)
    labels = ds.labels("train") if hasattr(ds, "labels") else getattr(ds, "splits", {}).get("train", (None, None))[1]
    if labels is not None and len(torch.unique(torch.as_tensor(labels))) < 2:
        raise UserError(f"{source}: every training image has the same label; a classifier needs at least 2 classes")


def _sample(ds: Dataset, count: int, seed: int, crop: int, batch: int) -> torch.Tensor:
    """``count`` training images drawn at random (the extractor's fitting sample)."""
    taken: list[torch.Tensor] = []
    have = 0
    for images, _ in ds.batches("train", BatchPlan(batch, shuffle=True, seed=seed)):
        taken.append(centre_crop(images.contiguous(), crop))
        have += len(images)
        if have >= count:
            break
    return torch.cat(taken)[:count]


def _save_predictions(path: Path, scores: torch.Tensor, labels: np.ndarray) -> None:
    """``PREDICTIONS``: ``labels`` (N), ``topk`` (N x k class indices, best first) and ``probs``
    (N x k, the softmax of the SVM scores: a ranking aid, not a calibrated probability)."""
    top = scores.softmax(1).topk(min(5, scores.shape[1]), dim=1)
    save_npz(path, {"labels": labels.astype(np.int64), "topk": top.indices.numpy(), "probs": top.values.float().numpy()})


def topk_errors(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 error (top-k of min(5, classes)) of score rows against labels."""
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return 1 - hit[:, 0].float().mean().item(), 1 - hit.any(1).float().mean().item()


def fit_baseline(cfg: BaselineConfig, out: str | Path, progress: bool = True, lock_held: bool = False) -> dict[str, Any]:
    """Fit (or resume) the baseline ``cfg`` in run folder ``out``; returns its metrics.

    The run folder has one writer: a second ``alexnet baseline`` on it gets a one-line error.
    ``lock_held``: the caller holds the folder's lock (:func:`~alexnet.runfolder.run_folder_lock`).
    """
    with run_folder_lock(out, take=not lock_held):
        return _fit_baseline(cfg, Path(out), progress)


def _fit_baseline(cfg: BaselineConfig, out: Path, progress: bool) -> dict[str, Any]:
    ds = open_dataset(cfg.data)
    _check_dataset(ds, cfg.data)
    train_n = ds.num_samples("train")
    if cfg.features == "hog-rbf" and cfg.landmarks > train_n:  # record the landmarks used, not the ones asked for
        if cfg.landmarks != BaselineConfig.landmarks:  # the user's own number: say it was lowered
            print(f"note: --landmarks {cfg.landmarks} is more than the {train_n:,} training images; using {train_n:,}",
                  file=sys.stderr)  # fmt: skip
        cfg = replace(cfg, landmarks=train_n)
    crop = ds.eval_crop
    make_extractor(cfg.features, crop, cfg, ds.info.channels)  # unknown names fail before anything is written
    _claim_config(out, cfg, ds)
    stages_path = out / "stages.json"
    stages: dict[str, Any] = read_json(stages_path) if stages_path.exists() else {}

    def finished(stage: str, **info: Any) -> None:
        stages[stage] = info
        atomic_write_json(stages_path, stages)

    # 1. fit the extractor on a sample of training images (a no-op for HOG and pixels)
    if not (out / "extractor.npz").exists():
        _fit_extractor(out, ds, cfg, progress, finished)
    extractor = _load_extractor(out, cfg.features)

    # 2-3. features of both splits, streamed to disk
    for split in ("train", "val"):
        path = out / "features" / f"{split}.npy"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            seconds = write_features(path, ds, split, extractor, cfg.batch_size, crop, progress)
            n = ds.num_samples(split)
            finished(f"features_{split}", seconds=seconds, images=n, images_per_sec=n / max(seconds, 1e-9))
    x_train, y_train = load_features(out / "features" / "train.npy")

    # 4. the linear SVM
    if len(np.unique(y_train)) < 2:
        raise UserError(f"{cfg.data}: every training image has the same label; a classifier needs at least 2 classes")
    if not (out / "classifier.npz").exists():
        start = time.perf_counter()
        svm = LinearSVM(SvmParams(l2=cfg.l2, max_iter=cfg.max_iter)).fit(x_train, y_train, ds.info.num_classes, progress)
        save_npz(out / "classifier.npz", svm.arrays())
        finished("classifier", seconds=time.perf_counter() - start, lbfgs_iterations=svm.iterations)
    return _write_metrics(out, cfg, ds, _load_svm(out), (x_train, y_train), stages, stages_path)


def _claim_config(out: Path, cfg: BaselineConfig, ds: Dataset) -> None:
    """Write the run's config, or check that the one there has the same settings (a resumed fit)."""
    run_config = {
        "kind": KIND, "format_version": FORMAT_VERSION, "settings": asdict(cfg),
        "classes": list(ds.info.classes), "channels": ds.info.channels, "image_size": ds.info.image_size,
        "crop": ds.eval_crop, "synthetic": ds.info.synthetic,
    }  # fmt: skip
    config_path = out / CONFIG
    if config_path.exists():
        if not is_baseline_run(out):
            raise UserError(f"{out} already holds something else (a network run?); choose another --out")
        saved = read_json(config_path)
        # Settings added since the folder was written count as their defaults.
        defaults = {f.name: f.default for f in fields(BaselineConfig) if f.default is not MISSING}
        if not isinstance(saved.get("settings", {}), dict):
            raise UserError(f"{config_path} is damaged (its settings are not an object); {RESTART}")
        if {**defaults, **saved.get("settings", {})} != run_config["settings"]:
            raise UserError(f"{out} holds a baseline with other settings; choose another --out or repeat its own")
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise UserError(f"{out} exists and is not a baseline run folder; choose another --out")
    else:
        atomic_write_json(config_path, run_config)


def _fit_extractor(out: Path, ds: Dataset, cfg: BaselineConfig, progress: bool, finished: Callable[..., None]) -> None:
    """Fit the extractor on a sample of training images (a no-op for HOG and pixels) and save it."""
    start = time.perf_counter()
    extractor = make_extractor(cfg.features, ds.eval_crop, cfg, ds.info.channels)
    count = {"hog-rbf": cfg.landmarks, "sift-fv": SiftFisher.FIT_IMAGES}.get(cfg.features)
    sample = _sample(ds, count, cfg.seed, ds.eval_crop, cfg.batch_size) if count else None
    if isinstance(extractor, SiftFisher) and sample is not None:
        extractor.fit(sample, progress=progress)  # PCA and EM: a bar over the EM iterations
    elif sample is not None:
        extractor.fit(sample)
    atomic_write_json(out / "extractor.json", extractor.config())
    save_npz(out / "extractor.npz", extractor.arrays())
    finished("extractor", seconds=time.perf_counter() - start)


def _write_metrics(
    out: Path, cfg: BaselineConfig, ds: Dataset, svm: LinearSVM, train: tuple[np.ndarray, np.ndarray],
    stages: dict[str, Any], stages_path: Path,
) -> dict[str, Any]:
    """5. The metrics, and the validation predictions that `alexnet report` draws (per-class
    errors, confusion, Figure 4 left)."""
    x_train, y_train = train
    x_val, y_val = load_features(out / "features" / "val.npy")
    with reading(out / "classifier.npz"):  # a classifier that does not fit the features: one line
        train_top1, _ = topk_errors(svm.decision_function(x_train), torch.from_numpy(y_train))
        val_scores = svm.decision_function(x_val)
    val_top1, val_top5 = topk_errors(val_scores, torch.from_numpy(y_val))
    _save_predictions(out / PREDICTIONS, val_scores, y_val)
    needed = {"extractor": ("seconds",), "features_train": ("seconds", "images_per_sec"),
              "classifier": ("seconds", "lbfgs_iterations")}  # fmt: skip
    if not all(isinstance(stages.get(k), dict) and all(is_number(stages[k].get(v)) for v in vs) for k, vs in needed.items()):
        raise UserError(f"{stages_path} is damaged (a stage's timings are missing); {RESTART}")
    extract = stages["features_train"]
    metrics = {
        "features": cfg.features, "description": DESCRIPTIONS[cfg.features], "data": cfg.data, "seed": cfg.seed,
        "synthetic": ds.info.synthetic, "feature_dim": int(x_train.shape[1]),
        "train_n": len(y_train), "train_top1_err": train_top1,
        "val_n": len(y_val), "val_top1_err": val_top1, "val_top5_err": val_top5,
        "extract_images_per_sec": extract["images_per_sec"],
        "extractor_fit_seconds": stages["extractor"]["seconds"],
        "fit_seconds": stages["classifier"]["seconds"],
        "train_seconds_total": stages["extractor"]["seconds"] + extract["seconds"] + stages["classifier"]["seconds"],
        "lbfgs_iterations": stages["classifier"]["lbfgs_iterations"],
    }  # fmt: skip
    atomic_write_json(out / BASELINE_METRICS, metrics)
    return metrics


@dataclass
class LoadedBaseline:
    """A fitted baseline ready to score images."""

    run: Path
    config: dict[str, Any]
    extractor: Extractor
    svm: LinearSVM

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.config["classes"])

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """SVM scores (N x classes) of uint8 ``N,C,crop,crop`` images."""
        return self.svm.decision_function(self.extractor.transform(images))


def load_baseline(run: str | Path) -> LoadedBaseline:
    """Load a fitted baseline run folder (arrays with ``allow_pickle=False`` and JSON only)."""
    run = Path(run)
    if not is_baseline_run(run):
        raise UserError(f"{run} is not a baseline run folder (no {CONFIG} of kind {KIND})")
    config = read_json(run / CONFIG)
    version = config.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{run} was written by a newer alexnet (format {version}); upgrade alexnet")
    missing = [f for f in ("extractor.json", "extractor.npz", "classifier.npz") if not (run / f).is_file()]
    if missing:
        raise UserError(f"{run} is an unfinished baseline (no {', '.join(missing)}); finish it with alexnet baseline --out {run} ...")
    settings = config.get("settings")
    if (
        not isinstance(settings, dict) or settings.get("features") not in FEATURES or not isinstance(settings.get("data"), str)
        or not isinstance(config.get("classes"), list) or not all(isinstance(c, str) for c in config["classes"])
        or not all(isinstance(config.get(k), int) and 1 <= config[k] <= MAX_IMAGE_SIDE for k in ("channels", "crop"))
    ):  # fmt: skip
        raise UserError(f"{run / CONFIG} is damaged (its settings, classes, channels or crop); {RESTART}")
    loaded = LoadedBaseline(run, config, _load_extractor(run, settings["features"]), _load_svm(run))
    with reading(run / "classifier.npz"):  # the parts must fit each other: one image through them all
        scores = loaded.scores(torch.zeros(1, config["channels"], config["crop"], config["crop"], dtype=torch.uint8))
        if tuple(scores.shape) != (1, len(loaded.classes)):
            raise ValueError(f"{scores.shape[1]} scores per image for {len(loaded.classes)} classes")
    return loaded


def _load_extractor(run: Path, features: str) -> Extractor:
    config = read_json(run / "extractor.json")
    with reading(run / "extractor.json"):
        return load_extractor(features, config, load_npz(run / "extractor.npz"))


def _load_svm(run: Path) -> LinearSVM:
    with reading(run / "classifier.npz"):
        return LinearSVM.from_arrays(load_npz(run / "classifier.npz"))


def evaluate_baseline(run: str | Path, data: str | None = None, split: str = "val", batch_size: int = 1000) -> dict[str, Any]:
    """Top-1/top-5 error of a baseline run on a split, in the shape of ``evaluate_checkpoints``'s
    result. ``loss`` is the SVM's own: the mean one-vs-rest squared hinge loss per image."""
    model = load_baseline(run)
    data = data or model.config["settings"]["data"]
    ds = open_dataset(data)
    if split not in ("train", "val"):
        raise UserError(f"unknown split {split!r}; use train or val")
    if ds.info.num_classes != len(model.classes) or ds.info.channels != model.config["channels"]:
        raise UserError(
            f"{run} expects {len(model.classes)} classes of {model.config['channels']}-channel images but {data} has "
            f"{ds.info.num_classes} classes of {ds.info.channels}-channel images"
        )
    if ds.num_samples(split) == 0:
        raise UserError(f"{data}: the {split} split is empty")
    all_scores, all_labels = [], []
    for images, labels in image_batches(ds, split, batch_size, model.config["crop"]):
        if images.shape[-1] != model.config["crop"]:
            raise UserError(f"{data} has {images.shape[-1]} px images; {run} was fitted on {model.config['crop']} px")
        all_scores.append(model.scores(images))
        all_labels.append(labels)
    scores, labels = torch.cat(all_scores), torch.cat(all_labels)
    top1, top5 = topk_errors(scores, labels)
    y = torch.where(labels[:, None] == torch.arange(scores.shape[1]), 1.0, -1.0)
    hinge = ((1 - y * scores).clamp(min=0) ** 2).sum(1).mean().item()
    return {
        "top1_err": top1, "top5_err": top5, "loss": hinge, "n": len(labels), "crops": 1, "models": [str(run)],
        "data": data, "split": split, "synthetic": ds.info.synthetic,
    }  # fmt: skip
