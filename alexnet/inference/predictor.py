"""One predictor for every model a user can point at.

:func:`open_predictor` opens a run folder, a checkpoint file, an imported Caffe run, a
torchvision AlexNet weights file, an exported ``.onnx`` file or a 2011 baseline run, and returns
a :class:`Predictor`: the model's :class:`~alexnet.data.convention.InputConvention`, its class
names, its name and source, and a batched :meth:`Predictor.predict` giving the same JSON record
for every kind (:func:`prediction_record`). Commands that need the torch network itself (its
features, its gradients) take it from :meth:`Predictor.require_network`, which says in one line
when a kind has none.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from alexnet.data.convention import EvalTransform, InputConvention, InputNorm, eval_transform
from alexnet.data.images import STDIN, STDIN_NAME, expand_images, load_image, read_image_bytes
from alexnet.errors import UserError
from alexnet.evaluation.loading import LoadedModel, load_model
from alexnet.precision import resolve_precision
from alexnet.runfolder import BASELINE, IMPORTED, NETWORK, run_kind
from alexnet.runtime import autocast, resolve_device

BATCH = 64  # images per forward pass: a folder of thousands of images stays in bounded memory
# Predictor.kind values beside run_kind's (network, imported, baseline), and how a message names each.
CHECKPOINT, TORCHVISION, ONNX = "checkpoint", "torchvision", "onnx"
KIND_WORDS = {
    NETWORK: "a trained run", IMPORTED: "an imported run", CHECKPOINT: "a checkpoint file",
    TORCHVISION: "a torchvision weights file", ONNX: "an exported ONNX model", BASELINE: "a baseline run (no network)",
}  # fmt: skip


def prediction_record(cls: str, index: int, probability: float, score: float | None = None) -> dict[str, Any]:
    """One ranked class of one image, the record every command and the HTTP API give:
    ``class``, ``index``, ``probability`` (softmax), and ``score`` where the model has one
    of its own (a baseline's SVM score; its probability is the softmax of the scores, a ranking
    aid, not a calibrated probability)."""
    record: dict[str, Any] = {"class": cls, "index": index, "probability": probability}
    if score is not None:
        record["score"] = score
    return record


class Predictor(ABC):
    """A model ready to classify images, whatever it was loaded from.

    Attributes:
        kind: ``network``, ``imported``, ``checkpoint``, ``torchvision``, ``onnx`` or ``baseline``.
        name: the model's name (``alexnet``, ``alexnet-owt``, ``hog`` ...).
        source: what it was opened from, as given.
        classes: class names in label order.
        convention: what its input must be; :attr:`transform` brings image files to it.
        device, precision: where and in which precision it runs (CPU/fp32 for ONNX and baselines).
        data_source: the ``--data`` it was trained on, when known.
    """

    kind: str
    name: str
    source: str
    classes: tuple[str, ...]
    convention: InputConvention
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    data_source: str | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()  # forward passes take turns: one model, many server threads

    @property
    def lock(self) -> threading.Lock:
        """Held while the network runs; work that hooks the shared network (saliency maps) holds it too."""
        return self._lock

    @property
    def transform(self) -> EvalTransform:
        """The model's eval transform (decode, normalise)."""
        return eval_transform(self.convention)

    @property
    def network(self) -> LoadedModel | None:
        """The torch network and its convention, for torch-backed kinds; None otherwise."""
        return None

    @property
    def module(self) -> nn.Module | None:
        """The torch network itself (eval mode, on :attr:`device`), for torch-backed kinds; else None."""
        return None if self.network is None else self.network.model

    def require_network(self, what: str) -> LoadedModel:
        """The torch network, or a one-line :class:`UserError` saying that ``what`` (e.g. "similar
        (fc7 distances)") needs one and this kind of model (ONNX, baseline) has none."""
        if self.network is None:
            raise UserError(f"{what} needs a torch network; {self.source} is {KIND_WORDS[self.kind]}: pass a run "
                            "folder, checkpoint or torchvision weights file")  # fmt: skip
        return self.network

    def decode(self, data: bytes, name: str = "image") -> torch.Tensor:
        """Encoded image bytes -> uint8 ``C x crop x crop`` as the model sees them; a
        :class:`UserError` naming ``name`` when they do not decode."""
        return load_image(name, self.convention, data)

    @abstractmethod
    def outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax probabilities (``N x classes``, float32, CPU) of a uint8 ``N,C,crop,crop`` batch,
        and the model's own scores where it has them (baselines), else None."""

    def top_k(self, batch: torch.Tensor, k: int) -> list[list[dict[str, Any]]]:
        """The ``k`` most likely classes of each image of a uint8 batch, as records
        (:func:`prediction_record`), best first; one forward pass."""
        with self._lock:
            probs, scores = self.outputs(batch)
        top = probs.topk(min(k, probs.shape[1]), dim=1)
        return [
            [prediction_record(self.classes[i], i, float(probs[n, i]), None if scores is None else float(scores[n, i]))
             for i in top.indices[n].tolist()]
            for n in range(probs.shape[0])
        ]  # fmt: skip

    def predict(self, images: Sequence[str], top_k: int = 5, stdin: IO[bytes] | None = None) -> list[dict[str, Any]]:
        """Top-``top_k`` classes of image files, folders of them (recursively) and ``-`` (standard
        input), in the order given, :data:`BATCH` images per forward pass. Each result is
        ``{"image", "predictions": [records]}``, or ``{"image", "error"}`` (a one-line message)
        for an image that cannot be read: it does not stop the others."""
        names = expand_images(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(names), BATCH):
            chunk: list[tuple[str, torch.Tensor]] = []
            for name in names[start : start + BATCH]:
                shown = STDIN_NAME if name == STDIN else name
                try:
                    chunk.append((shown, self.decode(read_image_bytes(name, stdin), name)))
                except UserError as e:
                    results.append({"image": shown, "error": str(e)})
            if chunk:
                tops = self.top_k(torch.stack([pixels for _, pixels in chunk]), top_k)
                results += [{"image": shown, "predictions": t} for (shown, _), t in zip(chunk, tops)]
        return _in_given_order(results, names)

    def info(self) -> dict[str, Any]:
        """What the model is, as plain data (``GET /v1/model``): no folder of this machine."""
        c = self.convention
        return {
            "name": self.name, "kind": self.kind, "classes": list(self.classes), "num_classes": len(self.classes),
            "input_size": c.crop, "image_size": c.image_size, "channels": c.channels, "channel_order": c.channel_order,
            "source": Path(self.source).name, "device": str(self.device), "precision": self.precision,
        }  # fmt: skip


def _in_given_order(results: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """``results`` (errors first within each batch) sorted back into the order of ``names``."""
    position = {STDIN_NAME if n == STDIN else n: i for i, n in enumerate(names)}
    return sorted(results, key=lambda r: position[r["image"]])


class TorchPredictor(Predictor):
    """A torch network (a run, checkpoint, imported run or torchvision weights file)."""

    def __init__(self, loaded: LoadedModel, kind: str, device: torch.device, precision: str) -> None:
        super().__init__()
        self.loaded, self.kind, self.device, self.precision = loaded, kind, device, precision
        self.name, self.source, self.classes, self.convention = loaded.name, loaded.source, loaded.classes, loaded.convention
        self.data_source = loaded.data_source

    @property
    def network(self) -> LoadedModel:
        return self.loaded

    @torch.inference_mode()
    def outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.transform.normalize(batch.to(self.device))
        with autocast(self.device, self.precision):
            return self.loaded.model(x).float().softmax(dim=1).cpu(), None


class OnnxPredictor(Predictor):
    """An ``alexnet export`` file under onnxruntime (CPU, fp32)."""

    kind = ONNX

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from alexnet.interop.onnx_model import OnnxModel

        super().__init__()
        self.model = OnnxModel(path, threads)
        self.name, self.source, self.convention = self.model.name, self.model.source, self.model.convention
        self.classes = self.model.classes

    def outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.from_numpy(self.model.logits(batch)).float().softmax(dim=1), None


class BaselinePredictor(Predictor):
    """A fitted 2011 baseline (features + linear SVM): ranked by its SVM scores."""

    kind = BASELINE

    def __init__(self, run: str | Path) -> None:
        from alexnet.baselines import load_baseline

        super().__init__()
        self.model = load_baseline(run)
        c = self.model.config
        self.name, self.source, self.classes = c["settings"]["features"], str(run), self.model.classes
        self.data_source = c["settings"]["data"]
        # Features are computed on the raw pixels: no normalisation.
        self.convention = InputConvention(c["channels"], c["image_size"], c["crop"], InputNorm.identity(c["channels"]))

    def outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.model.scores(batch).float()
        return scores.softmax(dim=1), scores


def open_predictor(source: str | Path, device: str = "auto", precision: str = "auto",
                   threads: int | None = None) -> Predictor:  # fmt: skip
    """The :class:`Predictor` of whatever ``source`` names: a ``.onnx`` file (onnxruntime,
    ``threads`` intra-op threads), a baseline run folder, a trained or imported run folder, an
    alexnet checkpoint file or a torchvision AlexNet state_dict. ``device``/``precision``
    (``auto``: the fastest) apply to torch networks. Every problem is a one-line :class:`UserError`."""
    text = str(source)
    if text.lower().endswith(".onnx") and not Path(text).is_dir():
        return OnnxPredictor(text, threads)
    kind = run_kind(text)
    if kind == BASELINE:
        return BaselinePredictor(text)
    torch_device = resolve_device(device)
    loaded = load_model(text, torch_device)  # a folder with nothing to open says why
    if kind is None:
        kind = TORCHVISION if loaded.origin == TORCHVISION else CHECKPOINT
    return TorchPredictor(loaded, kind, torch_device, resolve_precision(precision, torch_device, loaded.name))
