"""``alexnet report``: what a run learned, as one self-contained HTML page.

Sections (each says why when it has no meaning for the run at hand, e.g. a baseline run):

``run``            model, recipe, data, hardware, training time, final errors (and ten-crop /
                   ensemble figures when asked)
``curves``         loss, top-1/top-5 error and learning rate per epoch, lr drops marked
``figure3``        conv1 kernels by tower with each tower's colour specificity (section 6.1)
``layers``         every layer's receptive field; for a few units of conv1..conv5 their top-9
                   validation patches (Zeiler & Fergus 2014), mined once and cached
``probe``          ``alexnet probe``'s linear-SVM accuracy per layer beside HOG and pixels, when saved
``figure4-left``   validation images with their top-5 guesses
``figure4-right``  validation images with their nearest training images by fc7 distance
``per-class``      per-class top-1/top-5 error
``confusion``      the confusion matrix as a heat map
``confused-pairs`` the most confused class pairs with example images
``severity``       for data with a class hierarchy (ImageNet prepared with its devkit): LCA
                   heights of the top-1 mistakes, their histogram, nearest and furthest mistakes

A run folder is a **network run** when it holds ``checkpoints/last.pt`` and a **baseline run**
otherwise (``config.json`` and metrics, from ``alexnet baseline``). A baseline run that saves
``predictions.npz`` (``labels``: N int, ``topk``: N x k int, best first, optional ``probs``:
N x k float, on the validation split of its ``--data``) gets the prediction sections too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.baselines.pipeline import PREDICTIONS
from alexnet.data import open_dataset
from alexnet.data.dataset import Dataset
from alexnet.errors import UserError
from alexnet.evaluation import evaluate_checkpoints
from alexnet.evaluation.confusion import confusion_matrix, most_confused, per_class_errors
from alexnet.evaluation.features import Session, features_of, images_at, predict_split, session_for
from alexnet.evaluation.hierarchy import Hierarchy
from alexnet.evaluation.kernels import colour_specificity, conv1_kernels
from alexnet.evaluation.retrieval import load_or_build_index
from alexnet.inference import open_predictor
from alexnet.io import atomic_write_text
from alexnet.reporting import grids, plots
from alexnet.reporting.html import Page, Section
from alexnet.reporting.layers import layers_section, probe_section, saliency_maps
from alexnet.runfolder import (
    CHECKPOINTS,
    CONFIG,
    IMPORTED,
    LAST,
    METRICS,
    last_checkpoint,
    read_config,
    read_metrics,
    run_folder_lock,
    run_kind,
)

SECTIONS = ("run", "curves", "figure3", "layers", "probe", "figure4-left", "figure4-right", "per-class", "confusion",
            "confused-pairs", "severity")  # fmt: skip
BASELINE_NOTE = "Not meaningful for a baseline run: {what}."


@dataclass(frozen=True)
class ReportOptions:
    """What to put in the report and where to write it."""

    data: str | None = None  # default: the data the run was trained on
    out: str | None = None  # default: RUN/report.html
    samples: int = 8  # validation images in Figure 4
    neighbours: int = 6  # training images per row of Figure 4 (right)
    retrieval: bool = True  # Figure 4 (right) needs fc7 of every training image once (cached)
    views: str | None = None  # also evaluate with "flip" or "ten-crop" views
    ensemble: tuple[str, ...] = ()  # other runs to average with this one
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


@dataclass
class RunFolder:
    """What a run folder holds."""

    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    network: bool
    predictions: dict[str, np.ndarray] | None = None


@dataclass
class Predictions:
    """Validation labels and top-k guesses, from the network or from a baseline's file."""

    labels: np.ndarray
    topk: np.ndarray
    probs: np.ndarray | None
    classes: tuple[str, ...]
    class_ids: tuple[str, ...]
    dataset: Dataset | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_run(path: str | Path) -> RunFolder:
    """Read ``path``'s config and metrics; a :class:`UserError` when it is no finished run."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a run folder; pass the --out folder of `alexnet train`, `demo` or `baseline`")
    config = read_config(path) or {}
    network = last_checkpoint(path).is_file()
    if not network and not config:
        raise UserError(f"{path} holds neither {CHECKPOINTS}/{LAST} nor {CONFIG}; it is not a run folder")
    history = read_metrics(path)
    if not history and run_kind(path) != IMPORTED:  # imported weights have no training history to show
        raise UserError(f"{path} has no metrics yet ({METRICS}); let the run finish an epoch first")
    predictions = None
    if not network and (path / PREDICTIONS).is_file():
        try:
            with np.load(path / PREDICTIONS, allow_pickle=False) as z:
                predictions = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise UserError(f"{path / PREDICTIONS} cannot be read ({e})") from None
    return RunFolder(path, config, history, network, predictions)


def build_report(run_path: str | Path, options: ReportOptions = ReportOptions(),
                 log: Callable[[str], None] = print) -> Path:  # fmt: skip
    """Write the report of ``run_path`` (see the module docstring); returns its path."""
    started = time.perf_counter()
    run = read_run(run_path)
    out = Path(options.out) if options.out else run.path / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out must be an .html file, got {out}")
    session = _network_session(run, options) if run.network else None
    kind = "network" if run.network else "baseline"
    page = Page(f"alexnet report: {run.path.name}", f"{kind} run {run.path} · written {time.strftime('%Y-%m-%d %H:%M')}")
    _run_section(page.section("run", "The run"), run, session, options)
    _curves_section(page.section("curves", "Training curves"), run)
    _figure3_section(page.section("figure3", "Figure 3: conv1 kernels by tower"), session)
    _layers_section(page.section("layers", "What each layer learned: top-9 patches per unit"), run, session, options, log)
    _probe_section(page.section("probe", "How linearly separable each layer is (linear probes)"), run, session)
    preds = _predictions(run, session, options)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(preds.labels), size=min(options.samples, len(preds.labels)), replace=False)) if preds else None
    left = page.section("figure4-left", "Figure 4 (left): top-5 guesses")
    _figure4_left(left, preds, sample)
    if session is not None and preds is not None and sample is not None:
        saliency_maps(left, session, sample.tolist(), preds.topk[sample, 0].tolist())
    _figure4_right(page.section("figure4-right", "Figure 4 (right): nearest training images by fc7 distance"),
                   run, session, preds, sample, options, log)  # fmt: skip
    _per_class_section(page.section("per-class", "Per-class error"), preds)
    _confusion_section(page.section("confusion", "Confusion matrix"), page.section("confused-pairs", "Most confused pairs"), preds)
    _severity_section(page.section("severity", "Mistake severity in the class hierarchy"), preds)
    page.subtitle += f" · {time.perf_counter() - started:.1f} s to build"
    try:
        with run_folder_lock(run.path, flag="RUN"):  # one writer per run folder (alexnet/runfolder.py)
            atomic_write_text(out, page.render())
    except OSError as e:
        raise UserError(f"cannot write the report {out}: {e.strerror or e}") from None
    return out


def _network_session(run: RunFolder, options: ReportOptions) -> Session:
    """The run's network (opened by the one predictor) on the data it is reported on."""
    predictor = open_predictor(run.path, options.device, options.precision)
    return session_for(predictor.require_network("the report of a network run"), options.data, predictor.precision)


# --------------------------------------------------------------------------- sections


def _fmt_pct(v: Any) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) else "-"


def _run_section(s: Section, run: RunFolder, session: Session | None, options: ReportOptions) -> None:
    last = run.history[-1] if run.history else {}
    cfg = run.config.get("config", {})
    rows: list[tuple[str, object]] = []
    if run.network and session is not None:
        recipe = cfg.get("recipe", {})
        resolved, host, dataset = run.config.get("resolved", {}), run.config.get("host", {}), run.config.get("dataset", {})
        rows += [
            ("model", f"{session.loaded.name} ({resolved.get('parameters', '?'):,} parameters)"
             if isinstance(resolved.get("parameters"), int) else session.loaded.name),
            ("recipe", ", ".join(f"{k} {recipe[k]}" for k in ("name", "epochs", "batch_size", "lr", "momentum",
                                                               "weight_decay", "dropout") if k in recipe)),
            ("data", f"{session.data}: {session.dataset.info.name}" + (" (SYNTHETIC)" if session.dataset.info.synthetic else "")),
            ("images", f"train {dataset.get('train', '?')}, val {dataset.get('val', '?')}"),
            ("hardware", (f"{resolved.get('device', '?')}, {resolved.get('precision', '?')}, "
             f"{resolved.get('world_size', 1)} process(es); {host.get('processor') or host.get('platform', '?')}, "
             f"{host.get('cpu_threads', '?')} threads")),
        ]  # fmt: skip
    else:
        rows += [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in run.config.items()
                 if not isinstance(v, (dict, list)) or len(json.dumps(v)) < 200]  # fmt: skip
    if "epoch" in last:
        rows.append(("epochs", last["epoch"]))
    seconds = last.get("train_seconds_total", last.get("seconds"))
    if isinstance(seconds, (int, float)):
        rows.append(("training time", f"{seconds:.1f} s"))
    for key, label in (("val_top1_err", "final top-1 error (val, centre)"), ("val_top5_err", "final top-5 error (val, centre)"),
                       ("top1_err", "top-1 error"), ("top5_err", "top-5 error")):  # fmt: skip
        if key in last:
            rows.append((label, _fmt_pct(last[key])))
    if "val_top1_err" in last:
        rows.append(("best top-1 error (val)", _fmt_pct(min(r.get("val_top1_err", 1.0) for r in run.history))))
    s.table(["", ""], rows)
    if (options.views or options.ensemble) and run.network and session is not None:
        views = options.views or "centre"
        result = evaluate_checkpoints([session.loaded, *options.ensemble], session.data, "val", device_name=options.device,
                                      precision_name=options.precision, views=views)  # fmt: skip
        what = f"{len(result['models'])} model(s), {views} ({result['crops']} view(s) per image)"
        s.table(["evaluation", "top-1 error", "top-5 error", "images"],
                [(what, _fmt_pct(result["top1_err"]), _fmt_pct(result["top5_err"]), result["n"])])  # fmt: skip


def _curves_section(s: Section, run: RunFolder) -> None:
    history = [r for r in run.history if {"epoch", "lr", "train_loss"} <= r.keys()]
    if not history:
        s.note(BASELINE_NOTE.format(what="it is not trained by epochs") if not run.network
               else "Imported weights (alexnet import): no training history here." if not run.history
               else "No per-epoch metrics.")  # fmt: skip
        return
    schedule = run.config.get("config", {}).get("recipe", {}).get("schedule")
    initial = run.config.get("resolved", {}).get("lr", history[0]["lr"])
    drops = lr_drops(history, initial) if schedule == "plateau" else []
    s.image(plots.curves(history, drops), "training curves")
    if schedule == "plateau":
        s.note("Dashed red lines: the learning rate was lowered after epoch(s) " + ", ".join(map(str, drops)) + "."
               if drops else "The learning rate was not lowered during this run.")
    elif schedule:
        s.note(f"The learning rate follows the {schedule} schedule (changes every step; no discrete drops to mark).")


def lr_drops(history: list[dict[str, Any]], initial_lr: float) -> list[int]:
    """The epochs after which the learning rate was lowered (each record's ``lr`` is the one
    after that epoch's scheduler step). Section 5: "divide the learning rate by 10 when the
    validation error rate stopped improving"; only the plateau schedule has such discrete drops,
    one-cycle and cosine change the lr every step."""
    before = [initial_lr] + [r["lr"] for r in history[:-1]]
    return [r["epoch"] for b, r in zip(before, history) if r["lr"] < b]


def _figure3_section(s: Section, session: Session | None) -> None:
    if session is None:
        s.note(BASELINE_NOTE.format(what="it has no learned convolution kernels"))
        return
    kernels = conv1_kernels(session.loaded.model)
    k, c, h, w = sum(len(t) for t in kernels.towers), kernels.channels, *kernels.towers[0].shape[-2:]
    s.text(f"{k} conv1 kernels of size {h}x{w}x{c}" + (f", tower 1 above tower 2 ({' + '.join(str(len(t)) for t in kernels.towers)})"
                                                         if len(kernels.towers) > 1 else " (one tower)")
           + "; each kernel contrast-normalised on its own.")  # fmt: skip
    s.image(grids.kernel_grid(kernels.towers), "conv1 kernels")
    rows = []
    for i, t in enumerate(kernels.towers, 1):
        value = colour_specificity(t)
        rows.append((f"tower {i}", len(t), "grey model (1 channel)" if value is None else f"{value:.3f}"))
    s.table(["tower", "kernels", "colour specificity (mean chroma energy share)"], rows)
    s.note("Colour specificity: for each kernel, the share of its energy outside the grey axis (R = G = B), "
           "||w - mean over channels(w)||^2 / ||w||^2; 0 = colour-agnostic, 2/3 = one channel only, 1 = pure colour "
           "opponency. The paper (section 6.1) finds the GPU-1 tower largely colour-agnostic and the GPU-2 tower "
           "colour-specific.")  # fmt: skip


def _layers_section(s: Section, run: RunFolder, session: Session | None, options: ReportOptions,
                    log: Callable[[str], None]) -> None:  # fmt: skip
    if session is None:
        s.note(BASELINE_NOTE.format(what="a linear SVM on hand-made features (HOG, SIFT, pixels) has no learned layers to show"))
        return
    layers_section(s, session, run.path, options.progress, log)


def _probe_section(s: Section, run: RunFolder, session: Session | None) -> None:
    if session is None:
        s.note(BASELINE_NOTE.format(what="it has no layers to probe; its own accuracy is in the run section"))
        return
    probe_section(s, run.path, session)


def _predictions(run: RunFolder, session: Session | None, options: ReportOptions) -> Predictions | None:
    if session is not None:
        labels, topk, probs = predict_split(session, "val")
        ids = getattr(session.dataset, "class_ids", session.dataset.info.classes)
        return Predictions(labels, topk, probs, session.loaded.classes, tuple(ids), session.dataset)
    if run.predictions is None:
        return None
    z = run.predictions
    if "labels" not in z or "topk" not in z or z["topk"].ndim != 2 or len(z["topk"]) != len(z["labels"]):
        raise UserError(f"{run.path / PREDICTIONS} needs arrays labels (N) and topk (N x k)")
    data = options.data or run.config.get("data") or run.config.get("config", {}).get("data") or run.config.get("settings", {}).get("data")
    dataset = open_dataset(data) if data else None
    classes = dataset.info.classes if dataset else tuple(str(i) for i in range(int(max(z["labels"].max(), z["topk"].max())) + 1))
    ids = getattr(dataset, "class_ids", classes) if dataset else classes
    return Predictions(z["labels"].astype(np.int64), z["topk"].astype(np.int64), z.get("probs"), tuple(classes), tuple(ids), dataset)


def _hwc(image: torch.Tensor) -> np.ndarray:
    a = image.permute(1, 2, 0).contiguous().numpy()
    return a[:, :, 0] if a.shape[2] == 1 else a


def _no_predictions(s: Section) -> None:
    s.note(BASELINE_NOTE.format(what=f"it saved no {PREDICTIONS} (labels and top-k guesses on the validation split)"))


def _figure4_left(s: Section, preds: Predictions | None, sample: np.ndarray | None) -> None:
    if preds is None or sample is None:
        return _no_predictions(s)
    if preds.dataset is None or preds.probs is None:
        s.note("Needs the validation images and the guesses' probabilities; this run does not provide both.")
        return None
    images = images_at(preds.dataset, "val", sample.tolist())
    truths, guesses, probs, correct = [], [], [], []
    for img_idx in sample:
        t = int(preds.labels[img_idx])
        row = preds.topk[img_idx].tolist()
        truths.append(preds.classes[t])
        guesses.append([preds.classes[g] for g in row])
        probs.append(preds.probs[img_idx].tolist())
        correct.append(row.index(t) if t in row else None)
    s.image(plots.top5_panels([_hwc(im) for im in images], truths, guesses, probs, correct), "top-5 guesses")
    s.note(f"{len(sample)} validation images (a fixed random sample) with the network's five most probable classes; "
           "the correct class is green (the title too, when it is the first guess).")  # fmt: skip
    return None


def _figure4_right(s: Section, run: RunFolder, session: Session | None, preds: Predictions | None,
                   sample: np.ndarray | None, options: ReportOptions, log: Callable[[str], None]) -> None:  # fmt: skip
    if session is None or preds is None or sample is None:
        s.note(BASELINE_NOTE.format(what="it has no fc7 layer to compare images by"))
        return
    if not options.retrieval:
        s.note("Skipped (--no-retrieval): it needs the fc7 vectors of every training image once (then cached).")
        return
    index, built = load_or_build_index(session, run.path, "train", progress=options.progress, log=log)
    queries = images_at(session.dataset, "val", sample.tolist())
    found, dist = index.search(features_of(session, queries).numpy(), options.neighbours)
    neighbours = images_at(session.dataset, "train", sorted(set(found.ravel().tolist())))
    position = {j: n for n, j in enumerate(sorted(set(found.ravel().tolist())))}
    rows, captions, frames = [], [], []
    classes = session.loaded.classes
    for q, img in enumerate(queries):
        truth = int(preds.labels[sample[q]])
        rows.append([img] + [neighbours[position[int(j)]] for j in found[q]])
        captions.append([f"query: {classes[truth]}"]
                        + [f"{classes[int(index.labels[j])]} {d:.1f}" for j, d in zip(found[q], dist[q])])  # fmt: skip
        frames.append([None] + [grids.SAME if int(index.labels[j]) == truth else grids.DIFFERENT
                                for j in found[q]])  # fmt: skip
    s.image(grids.image_rows(rows, captions, frames), "nearest training images")
    s.note(f"Left: validation image; right: its {found.shape[1]} nearest of the {len(index):,} training images by "
           "Euclidean distance of fc7 activations (float16 index cached in the run's retrieval/ folder"
           f"{', built now' if built else ''}). Green frame: same class as the query; red: another class; "
           "captions: class and distance.")  # fmt: skip


def _per_class_section(s: Section, preds: Predictions | None) -> None:
    if preds is None:
        return _no_predictions(s)
    n_classes = len(preds.classes)
    table = per_class_errors(preds.labels, preds.topk, n_classes)
    order = [i for i in np.argsort(-np.nan_to_num(table[:, 1], nan=-1), kind="stable") if table[i, 0] > 0]
    shown = order if len(order) <= 50 else order[:30] + order[-10:]
    rows = [(preds.classes[i], int(table[i, 0]), _fmt_pct(table[i, 1]), _fmt_pct(table[i, 2])) for i in shown]
    s.table(["class", "images", "top-1 error", "top-5 error"], rows)
    if len(shown) < len(order):
        s.note(f"The 30 hardest and the 10 easiest of {len(order)} classes.")
    return None


def _confusion_section(s: Section, pairs_section: Section, preds: Predictions | None) -> None:
    if preds is None:
        _no_predictions(s)
        _no_predictions(pairs_section)
        return
    n = len(preds.classes)
    top1 = preds.topk[:, 0]
    s.image(plots.heat_map(confusion_matrix(preds.labels, top1, n), preds.classes), "confusion matrix")
    pairs = most_confused(preds.labels, top1, n, top=8, examples=6)
    if not pairs:
        pairs_section.text("No top-1 mistakes on the validation split.")
        return
    pairs_section.table(["true class", "predicted as", "images"],
                        [(preds.classes[p.true], preds.classes[p.predicted], p.count) for p in pairs])  # fmt: skip
    if preds.dataset is not None:
        rows = [list(images_at(preds.dataset, "val", list(p.examples))) for p in pairs]
        captions = [[f"{preds.classes[p.true]}>{preds.classes[p.predicted]}"] * len(p.examples) for p in pairs]
        pairs_section.image(grids.image_rows(rows, captions, first_gap=0), "examples of confused pairs")
        pairs_section.note("One row per pair above: validation images of the true class that were classified as the other.")


def _severity_section(s: Section, preds: Predictions | None) -> None:
    if preds is None:
        return _no_predictions(s)
    manifest = getattr(preds.dataset, "manifest", None) if preds.dataset is not None else None
    tree = manifest.get("hierarchy") if isinstance(manifest, dict) else None
    if not tree:
        s.note("Needs a class hierarchy: ImageNet prepared with its devkit (meta.mat's synset tree is stored in the "
               "prepared dataset's manifest). This data has none.")  # fmt: skip
        return None
    hierarchy = Hierarchy.from_dict(tree)
    top1 = preds.topk[:, 0]
    heights = hierarchy.mistake_heights(preds.class_ids, preds.labels, top1)
    wrong = np.flatnonzero(preds.labels != top1)
    if not len(wrong):
        s.text("No top-1 mistakes on the validation split.")
        return None
    known = heights >= 0
    s.table(["top-1 mistakes", "mean LCA height", "median", "max"],
            [(len(wrong), f"{heights[known].mean():.2f}" if known.any() else "-",
              f"{np.median(heights[known]):.1f}" if known.any() else "-", int(heights.max()))])  # fmt: skip
    s.image(plots.histogram(heights[known], "LCA height of top-1 mistakes", "height of the lowest common ancestor"),
            "mistake severity histogram")  # fmt: skip
    order = np.argsort(heights, kind="stable")
    if preds.dataset is not None:
        picks = [("nearest", order[:6]), ("furthest", order[::-1][:6])]
        rows = [list(images_at(preds.dataset, "val", wrong[p].tolist())) for _, p in picks]
        short = [c.split(",")[0] for c in preds.classes]  # "tench, Tinca tinca" -> "tench"
        captions = [[f"h{heights[i]} {short[preds.labels[wrong[i]]]}>{short[top1[wrong[i]]]}" for i in p]
                    for _, p in picks]  # fmt: skip
        s.image(grids.image_rows(rows, captions, first_gap=0, tile=112), "nearest and furthest mistakes")
        s.note("Top row: the mildest mistakes (lowest LCA height); bottom row: the furthest. Caption: height, true>predicted class.")
    s.note("LCA height: edges from the further of the true and the predicted class up to their lowest common "
           "ancestor in meta.mat's synset tree (1 = siblings).")  # fmt: skip
    return None
