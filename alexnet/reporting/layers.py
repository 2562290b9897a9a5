"""The report's layer-by-layer section: what each convolutional layer learned (Zeiler & Fergus
2014): for a few units of conv1..conv5, the validation patches that excite them most, each cut
to the unit's receptive field, with the unit's response."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from alexnet.baselines.probe import ProbeResult, probe_path
from alexnet.data.presets import centre_crop
from alexnet.errors import UserError
from alexnet.evaluation.features import Session, images_at
from alexnet.evaluation.receptive import Field, receptive_fields
from alexnet.evaluation.retrieval import identity
from alexnet.evaluation.saliency import grad_cam, occlusion
from alexnet.evaluation.units import TopUnits, load_or_mine
from alexnet.reporting import grids, plots
from alexnet.reporting.explain import overlay
from alexnet.reporting.html import Section
from alexnet.runtime import autocast

ACTIVE, VARIED = 3, 3  # units shown per layer: the most active, then the most varied
OUTSIDE = 128  # grey for the part of a receptive field that lies in the padding, off the image
TILE = 56


def representative_units(units: TopUnits, active: int = ACTIVE, varied: int = VARIED) -> list[int]:
    """The ``active`` units with the largest mean response (over images, of the unit's maximum
    over its map), then the ``varied`` others whose response varies most between images (largest
    standard deviation). Units that never fire (top response <= 0) are left out."""
    alive = np.flatnonzero(units.values[:, 0] > 0)
    by_mean = [int(u) for u in alive[np.argsort(-units.mean[alive], kind="stable")][:active]]
    rest = [int(u) for u in alive[np.argsort(-units.std[alive], kind="stable")] if u not in by_mean]
    return by_mean + rest[:varied]


def patch(image: torch.Tensor, field: Field, y: int, x: int) -> torch.Tensor:
    """The ``field.size`` square that unit ``(y, x)`` sees of ``image`` (uint8 ``C x H x W``, the
    network's input crop); the part of it that lies off the image (in the padding) is grey."""
    c, h, w = image.shape
    top, left, bottom, right = field.box(y, x, h, w)
    out = torch.full((c, field.size, field.size), OUTSIDE, dtype=torch.uint8)
    oy, ox = top - (field.offset + y * field.jump), left - (field.offset + x * field.jump)
    out[:, oy : oy + bottom - top, ox : ox + right - left] = image[:, top:bottom, left:right]
    return out


def layers_section(s: Section, session: Session, run: Path, progress: bool, log: Callable[[str], None]) -> None:
    """Fill ``s``: a table of every layer's geometry, then each conv layer's representative units
    as rows of their top-9 patches."""
    model = session.loaded.model
    try:
        fields = receptive_fields(model)
    except UserError as e:
        s.note(f"Not shown: {e}.")
        return
    units, mined = load_or_mine(session, run, "val", progress=progress, log=log)
    crop = session.loaded.crop
    rows = []
    for name, f in fields.items():
        u = units.get(name)
        dead = f"{int((u.values[:, 0] <= 0).sum())} of {len(u.values)}" if u is not None else "-"
        rows.append((name, f"{f.size}x{f.size}", f.jump, f.offset, dead))
    s.table(["layer", f"receptive field (of {crop}x{crop})", "stride (px)", "offset (px)", "units never active"], rows)
    s.note("Receptive field: the input pixels one unit sees, from the kernels, strides and paddings of every layer "
           "below it; offset: where unit (0, 0)'s field starts (negative: in the padding). A unit never active has "
           "no positive response on any validation image.")  # fmt: skip
    for name, u in units.items():
        chosen = representative_units(u)
        if not chosen:
            s.text(f"{name}: no unit responds positively to any validation image.")
            continue
        wanted = sorted({int(i) for unit in chosen for i in u.images[unit] if i >= 0})
        position = {j: n for n, j in enumerate(wanted)}
        images = centre_crop(images_at(session.dataset, "val", wanted), crop)
        grid_rows, captions = [], []
        for unit in chosen:
            tops = [(int(i), int(y), int(x), float(v)) for i, y, x, v in zip(u.images[unit], u.ys[unit], u.xs[unit], u.values[unit])
                    if i >= 0]  # fmt: skip
            grid_rows.append([patch(images[position[i]], fields[name], y, x) for i, y, x, _ in tops])
            captions.append([(f"#{unit} " if k == 0 else "") + f"{v:.2f}" for k, (*_, v) in enumerate(tops)])
        f = fields[name]
        s.text(f"{name}: {len(u.values)} units, each sees {f.size}x{f.size} px (rows: units {', '.join(map(str, chosen))}).")
        s.image(grids.image_rows(grid_rows, captions, tile=TILE, first_gap=0), f"{name} top patches")
    s.note(f"Each row is one unit: its {units[next(iter(units))].values.shape[1]} validation images with the largest "
           "response (its convolution's output at its strongest position, before the ReLU), each cut to the unit's "
           f"receptive field (grey: the part that lies in the padding), with the response. Per layer the {ACTIVE} units "
           f"with the largest mean response over the validation split, then the {VARIED} whose response varies most "
           "between images (largest standard deviation). Mined in one pass over the split, cached in the run's layers/ "
           f"folder{' (mined now)' if mined else ''}.")  # fmt: skip


def probe_section(s: Section, run: Path, session: Session) -> None:
    """Fill ``s`` from ``alexnet probe``'s saved result: accuracy per layer beside HOG and pixels."""
    path = probe_path(run)
    try:
        result = ProbeResult.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        s.note(f"No probe yet: `alexnet probe {run}` fits a linear SVM on every layer and writes {path}; "
               "the report then shows it here.")  # fmt: skip
        return
    except (OSError, ValueError, TypeError, KeyError) as e:
        s.note(f"{path} cannot be read ({e}); run `alexnet probe` again.")
        return
    layers = [r for r in result.rows if r.name not in ("hog", "pixels")]
    references = {r.name: r.test_acc for r in result.rows if r.name in ("hog", "pixels")}
    if layers:
        s.image(plots.probe_accuracy([r.name for r in layers], [r.test_acc for r in layers], references), "probe accuracy per layer")
    s.table(["features", "what", "dims", "train accuracy", "test accuracy"],
            [(r.name, r.shape, r.dims, f"{r.train_acc:.2%}", f"{r.test_acc:.2%}") for r in result.rows])  # fmt: skip
    current = identity(session, run, "val", ",".join(r.name for r in result.rows))
    stale = result.identity.get("checkpoint_sha256") != current["checkpoint_sha256"]
    s.note(f"`alexnet probe`: a linear SVM fitted on each layer's activations (after the ReLU; conv maps average-pooled) "
           f"of {result.train_images:,} training images of {result.data}, scored on {result.val_images:,} validation images; "
           "HOG and pixels: the same SVM on the 2011 features of the same images.")  # fmt: skip
    if stale:
        s.text("This probe was computed from an earlier checkpoint of the run; run `alexnet probe` again.", "warn")


OCCLUSION_MAX_SIDE = 64  # occlusion maps in the report only for small inputs (a 227 px map is seconds: `alexnet explain`)


def saliency_maps(s: Section, session: Session, sample: Sequence[int], predicted: Sequence[int]) -> None:
    """Below Figure 4 (left): where each sample's top class comes from, Grad-CAM and (small
    inputs) occlusion, drawn over the image (:mod:`alexnet.reporting.explain`)."""
    model = session.loaded.model.eval()
    crop = session.loaded.crop
    images = images_at(session.dataset, "val", list(sample))
    pixels = centre_crop(images, crop)
    x = session.pipeline.eval(images)
    classes = session.loaded.classes
    occlude = crop <= OCCLUSION_MAX_SIDE
    rows: list[list[torch.Tensor]] = [list(pixels), [], []]
    captions: list[list[str]] = [[classes[int(p)][:15] for p in predicted], [], []]
    for i, target in enumerate(predicted):
        with autocast(session.device, session.precision):
            rows[1].append(overlay(pixels[i], grad_cam(model, x[i : i + 1], int(target))))
            if occlude:
                rows[2].append(overlay(pixels[i], occlusion(model, x[i : i + 1], int(target))))
        captions[1].append("Grad-CAM")
        captions[2].append("occlusion")
    if not occlude:
        rows, captions = rows[:2], captions[:2]
    s.image(grids.image_rows(rows, captions, first_gap=0), "where the top class comes from")
    s.note("Where each image's top class comes from (columns as above; caption: the top class): Grad-CAM on the last "
           "convolutional layer" + (" and occlusion (the drop in its probability when a grey square hides each part, "
                                    "Zeiler & Fergus Figure 7)" if occlude else "")
           + "; red: evidence for the class, blue: against it. `alexnet explain RUN IMAGE` draws them for any image.")  # fmt: skip
