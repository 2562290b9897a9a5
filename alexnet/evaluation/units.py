"""The images that excite each unit most (Zeiler & Fergus 2014, Figure 2's top-9 patches).

One streaming pass over a split keeps, per unit (channel) of each convolutional layer, the
``k`` images with the largest response: for a convolution, the maximum over the unit's map
positions, and where it was. Memory is ``k`` entries per unit plus one batch. The pass also
sums every image's maximum and its square per unit, so the report can pick the most active and
the most selective units.

The result is cached beside the run in ``layers/`` (rebuilt when the checkpoint or the data
change, like the retrieval index of :mod:`alexnet.evaluation.retrieval`)::

    top9-val.npz    per layer: values, images, ys, xs (units x k), sums, squares (units)
    top9-val.json   what it was mined from, written last
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from alexnet.data import BatchPlan
from alexnet.errors import UserError
from alexnet.evaluation.features import Session, check_split
from alexnet.evaluation.retrieval import identity
from alexnet.io import atomic_write, atomic_write_json
from alexnet.runfolder import run_folder_lock
from alexnet.runtime import autocast

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
UNITS_DIR = "layers"
TOP_K = 9  # Zeiler & Fergus show each unit's top 9 patches
FIELDS = ("values", "images", "ys", "xs")


@dataclass
class TopUnits:
    """The ``k`` strongest responses of every unit (channel) of one layer over a split."""

    layer: str
    values: np.ndarray  # units x k float32, best first (-inf where fewer than k images)
    images: np.ndarray  # units x k int64: index of the image in the split
    ys: np.ndarray  # units x k int64: map row of the maximum
    xs: np.ndarray  # units x k int64: map column
    sums: np.ndarray  # units float64: sum over images of the unit's maximum over its map
    squares: np.ndarray  # units float64: sum of its squares
    count: int  # images seen

    @property
    def mean(self) -> np.ndarray:
        return self.sums / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.squares / max(self.count, 1) - self.mean**2, 0.0))


class RunningTopK:
    """The top ``k`` of a stream of ``N x C x H x W`` activations per channel (max over positions)."""

    def __init__(self, layer: str, channels: int, k: int) -> None:
        self.layer, self.k = layer, k
        self.values = torch.full((channels, k), -torch.inf)
        self.images = torch.full((channels, k), -1, dtype=torch.int64)
        self.positions = torch.zeros((channels, k), dtype=torch.int64)
        self.sums = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.width = 1
        self.count = 0

    def update(self, activations: torch.Tensor) -> None:
        """Fold in the next batch (its images follow the ones seen so far)."""
        n, c = activations.shape[:2]
        self.width = activations.shape[-1] if activations.ndim == 4 else 1
        best, where = activations.detach().float().flatten(2).max(dim=2)  # N x C each
        best, where = best.cpu(), where.cpu()
        self.sums += best.double().sum(0)
        self.squares += best.double().pow(2).sum(0)
        index = torch.arange(self.count, self.count + n).expand(c, n)
        values = torch.cat([self.values, best.T], dim=1)
        top = values.topk(min(self.k, values.shape[1]), dim=1)
        pad = self.k - top.values.shape[1]
        self.values = torch.nn.functional.pad(top.values, (0, pad), value=-torch.inf)
        self.images = torch.nn.functional.pad(torch.cat([self.images, index], 1).gather(1, top.indices), (0, pad), value=-1)
        self.positions = torch.nn.functional.pad(torch.cat([self.positions, where.T], 1).gather(1, top.indices), (0, pad))
        self.count += n

    def result(self) -> TopUnits:
        ys, xs = self.positions // self.width, self.positions % self.width
        return TopUnits(self.layer, self.values.numpy(), self.images.numpy(), ys.numpy(), xs.numpy(), self.sums.numpy(),
                        self.squares.numpy(), self.count)  # fmt: skip


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The convolutional weight layers of ``model`` (conv1 .. conv5, those it has)."""
    roles = getattr(model, "layers_by_role", None)
    if roles is None:
        raise UserError(f"{type(model).__name__} does not name its layers (layers_by_role)")
    return {name: m for name, m in roles().items() if name in CONV_LAYERS and isinstance(m, nn.Conv2d)}


@torch.inference_mode()
def mine_top_units(session: Session, split: str = "val", layers: Sequence[str] | None = None, k: int = TOP_K,
                   batch_size: int = 250, progress: bool = True) -> dict[str, TopUnits]:  # fmt: skip
    """Every unit's top ``k`` images of ``split`` in each of ``layers`` (default: every conv
    layer), in one pass. A unit's response is its convolution's output (before the ReLU, so a
    unit that never fires still ranks its images), maximised over positions."""
    n = check_split(session, split)
    model = session.loaded.model.eval()
    modules = conv_layers(model)
    layers = list(layers or modules)
    missing = [name for name in layers if name not in modules]
    if missing:
        raise UserError(f"{session.loaded.name} has no convolutional layer {', '.join(missing)}")
    trackers: dict[str, RunningTopK] = {}

    def hook(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def record(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            # Called before the in-place ReLU that follows changes ``out``.
            if name not in trackers:
                trackers[name] = RunningTopK(name, out.shape[1], k)
            trackers[name].update(out)

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        with tqdm(total=n, unit="img", desc=f"top-{k} units {split}", disable=not progress, dynamic_ncols=True) as bar:
            for images, _ in session.dataset.batches(split, BatchPlan(batch_size)):
                with autocast(session.device, session.precision):
                    model(session.pipeline.eval(images))
                bar.update(len(images))
    finally:
        for h in handles:
            h.remove()
    return {name: trackers[name].result() for name in layers}


def units_paths(run: str | Path, split: str, k: int = TOP_K) -> tuple[Path, Path]:
    """(arrays, meta JSON) of the cached top units of ``run`` (folder, or beside a checkpoint file)."""
    run = Path(run)
    folder = (run if run.is_dir() else run.parent) / UNITS_DIR
    return folder / f"top{k}-{split}.npz", folder / f"top{k}-{split}.json"


def _save(path: Path, units: dict[str, TopUnits]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name, u in units.items():
        for key in (*FIELDS, "sums", "squares"):
            arrays[f"{name}.{key}"] = getattr(u, key)
        arrays[f"{name}.count"] = np.array(u.count)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def _load(path: Path, layers: Sequence[str]) -> dict[str, TopUnits]:
    with np.load(path, allow_pickle=False) as z:
        return {name: TopUnits(name, *(z[f"{name}.{key}"] for key in (*FIELDS, "sums", "squares")),
                               int(z[f"{name}.count"])) for name in layers}  # fmt: skip


def load_or_mine(session: Session, run: str | Path, split: str = "val", k: int = TOP_K, progress: bool = True,
                 log: Callable[[str], None] = print) -> tuple[dict[str, TopUnits], bool]:  # fmt: skip
    """The cached top units of every conv layer (mined again if missing, stale or damaged);
    returns them and whether they were mined now."""
    arrays_path, meta_path = units_paths(run, split, k)
    layers = list(conv_layers(session.loaded.model))
    want = identity(session, run, split, ",".join(layers)) | {"k": k}
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("identity") == want:
            return _load(arrays_path, layers), False
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        pass  # missing or damaged: mine again
    log(f"mining the top-{k} images of every unit of {', '.join(layers)} over the {split} split "
        f"({want['images']:,} images) into {arrays_path.parent}")  # fmt: skip
    started = time.perf_counter()
    with run_folder_lock(run, flag="RUN"):  # one writer per run folder
        meta_path.unlink(missing_ok=True)  # the JSON is the commit record
        units = mine_top_units(session, split, layers, k, progress=progress)
        _save(arrays_path, units)
        atomic_write_json(meta_path, {"identity": want, "seconds": time.perf_counter() - started})
    return units, True
