"""The checkpoint format, in one place: :class:`Checkpoint` and the files it is read from.

A checkpoint file is a plain dict of tensors and primitives (format 1, below), always loadable
with ``torch.load(path, weights_only=True)``: loading never executes code from the file. It
holds the model weights and everything needed to use the model (model name and options,
classes, the input convention record of :mod:`alexnet.data.convention`) and, when written by ``alexnet train``, to resume exactly
(optimizer, scheduler, RNG states, the position inside the epoch).

This module is the only one that knows the dict's keys: training writes a
:class:`Checkpoint`, and training, evaluation and prediction read one back through
:func:`read_checkpoint`, which checks every field once and turns every problem (a missing,
empty, truncated or foreign file, a pickle of Python objects, wrong types) into one-line
:class:`~alexnet.errors.UserError`.

Run folders keep ``checkpoints/last.pt`` (replaced atomically), ``best.pt`` and
``step-NNNNNNNN.pt``, which are hard links to an earlier ``last.pt`` content: free when
written, but each holds a full copy once ``last.pt`` has moved on, so only the newest few are
kept (:func:`prune_step_checkpoints`).
"""

from __future__ import annotations

import io
import math
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.data.convention import InputConvention, InputNorm
from alexnet.errors import UserError, one_line
from alexnet.io import atomic_write
from alexnet.runfolder import BASELINE_RUN, LAST, folder_contents, last_checkpoint

KIND = "alexnet-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("kind", "format_version", "model", "model_name", "model_options", "num_classes", "classes", "data")
TRAINING_STATE = ("epoch", "step", "step_in_epoch", "optimizer", "scheduler", "rng", "progress", "config")


@dataclass(frozen=True)
class DataSpec:
    """The input a model was trained on: what a user of the model must feed it."""

    name: str
    channels: int
    image_size: int  # images are resized/cropped to this side first
    crop: int  # then (centre-)cropped to this
    synthetic: bool
    norm: InputNorm
    channel_order: str = ""  # "" = RGB, or L for one channel (InputConvention)
    pixel_scale: float = 255.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_order", self.convention.channel_order)

    @property
    def convention(self) -> InputConvention:
        """The model's input convention record (what ``data.convention`` holds on disk)."""
        return InputConvention(self.channels, self.image_size, self.crop, self.norm, self.channel_order, self.pixel_scale)

    @classmethod
    def of(cls, name: str, synthetic: bool, convention: InputConvention) -> DataSpec:
        """The data settings of a model with ``convention``."""
        c = convention
        return cls(name, c.channels, c.image_size, c.crop, synthetic, c.norm, c.channel_order, c.pixel_scale)

    def to_dict(self) -> dict[str, Any]:
        # The flat fields stay for readers of format 1 before the record (warm starts read them);
        # the record's mean image is the same tensor, stored once by torch.save.
        return {"name": self.name, "channels": self.channels, "image_size": self.image_size, "crop": self.crop,
                "synthetic": self.synthetic, **self.norm.to_dict(), "convention": self.convention.to_dict()}  # fmt: skip


@dataclass
class Progress:
    """Where a run is: the resume point stored in checkpoints."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    best_val_top1_err: float = math.inf
    epoch_seconds: float = 0.0  # training time spent in the current epoch so far
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: dict[str, float] | None = None  # partial sums of the current epoch (mid-epoch resume)


@dataclass
class Checkpoint:
    """One checkpoint, typed. ``optimizer``/``scheduler``/``rng``/``config`` are empty in files
    that only carry a model (:attr:`resumable` tells)."""

    weights: dict[str, torch.Tensor]
    model_name: str
    model_options: dict[str, Any]
    classes: tuple[str, ...]
    data: DataSpec
    progress: Progress = field(default_factory=Progress)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: list[dict[str, Any]] = field(default_factory=list)  # one entry per rank
    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it was read from (for messages)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resumable(self) -> bool:
        return self.optimizer is not None and self.scheduler is not None and bool(self.rng) and bool(self.config)

    def to_dict(self) -> dict[str, Any]:
        """The on-disk dict (format :data:`FORMAT_VERSION`)."""
        p = self.progress
        d: dict[str, Any] = {
            "kind": KIND, "format_version": FORMAT_VERSION,
            "model": self.weights, "model_name": self.model_name, "model_options": _explicit(self.model_name, self.model_options),
            "num_classes": self.num_classes, "classes": list(self.classes), "data": self.data.to_dict(),
            "epoch": p.epoch, "step": p.global_step, "step_in_epoch": p.step_in_epoch,
            "progress": {"train_seconds": p.train_seconds, "epoch_seconds": p.epoch_seconds,
                         "best_val_top1_err": p.best_val_top1_err, "history": p.history, "meter": p.meter},
        }  # fmt: skip
        if self.resumable:
            d |= {"optimizer": self.optimizer, "scheduler": self.scheduler, "rng": self.rng, "config": self.config}
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "checkpoint") -> Checkpoint:
        """Validate the dict of a checkpoint file; every problem is a one-line :class:`UserError`."""
        return _parse(d, source)

    def build_model(self) -> nn.Module:
        """The model of this checkpoint with its weights loaded (CPU)."""
        from alexnet import models  # models sit below training; imported late to keep start-up light

        try:
            model = models.create(self.model_name, self.num_classes, **self.model_options)
        except UserError as e:
            raise UserError(f"{self.source}: {one_line(str(e), limit=300)}") from None
        except Exception as e:  # noqa: BLE001 - option values of the wrong type reach the constructor
            raise UserError(f"{self.source}: its model options {one_line(self.model_options)} do not build a model "
                            f"({one_line(str(e))})") from None  # fmt: skip
        self.load_weights_into(model)
        return model

    def load_weights_into(self, model: nn.Module) -> None:
        """Load the weights into ``model``; a mismatch names the first differing entry."""
        load_state_dict_checked(model, self.weights, self.source)

    def require_training_state(self) -> None:
        """Refuse to resume from a file without the optimizer, scheduler and RNG states."""
        if not self.resumable:
            raise UserError(f"{self.source} holds a model but not the training state needed to resume from it")


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)``, with a mismatch reported as one line naming the first
    missing, unexpected or differently-shaped entry (both shapes)."""
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in state:
            raise UserError(f"{source} does not fit the model: it has no {key!r} (the model's is {_shape(tensor)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{source} does not fit the model: {key!r} is {_shape(state[key])} in the checkpoint "
                f"but {_shape(tensor)} in the model"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise UserError(f"{source} does not fit the model: it has {extra[0]!r}, which the model has not")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"{source} does not fit the model: {str(e).strip().splitlines()[0]}") from None


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "a scalar"


def _explicit(model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options to write: those whose default changed are named (models.LEGACY_DEFAULTS)."""
    from alexnet import models  # models sit below training; imported late to keep start-up light

    return models.explicit_options(model_name, options)


def _saved(model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options a read checkpoint was built with: older files get the old defaults."""
    from alexnet import models

    return models.saved_options(model_name, options)


def stored_model_options(path: str | Path) -> dict[str, Any]:
    """The model options of the checkpoint at ``path`` (as :class:`Checkpoint` reads them),
    without reading its tensors (memory-mapped): what ``--resume`` must rebuild."""
    try:
        raw = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a damaged file (one-line error) or one mmap cannot map (read whole)
        raw = _torch_load(Path(path), "cpu")
    options = raw.get("model_options") if isinstance(raw, dict) else None
    if not isinstance(options, dict):
        return {}  # not a checkpoint: reading it for real says why
    return _saved(str(raw.get("model_name", "")), options)


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: itself, or a run folder's ``checkpoints/last.pt``."""
    path = Path(path)
    if path.is_dir():
        candidate = last_checkpoint(path)
        if not candidate.exists():
            if folder_contents(path) == BASELINE_RUN:  # features + SVM: no network to export, serve or embed
                raise UserError(f"{path} is a baseline run (no network): only eval and predict use it; "
                                "pass a network's run folder or a .pt file")  # fmt: skip
            raise UserError(f"{path} is a folder without checkpoints/{LAST}; pass a run folder or a .pt file")
        return candidate
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate the checkpoint at ``path`` (a ``.pt`` file or a run folder)."""
    path = checkpoint_path(path)
    return Checkpoint.from_dict(_torch_load(path, map_location), str(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The validated on-disk dict of a checkpoint (see :func:`read_checkpoint` for the typed form)."""
    return read_checkpoint(path, map_location).to_dict()


def build_model_from_checkpoint(ckpt: Checkpoint | dict[str, Any]) -> nn.Module:
    """Recreate the model of a checkpoint and load its weights."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = Checkpoint.from_dict(ckpt)
    return ckpt.build_model()


def read_raw(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with its failures as one-line user errors."""
    return _torch_load(path, map_location)


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if not head:
        raise UserError(f"{path} is empty (0 bytes): not a readable checkpoint (an interrupted copy?)")
    is_zip, is_pickle = head.startswith(b"PK\x03\x04"), head[:1] == b"\x80"
    if not (is_zip or is_pickle):
        preview = head.decode("latin-1").encode("unicode_escape").decode()
        raise UserError(f"{path} is not a readable checkpoint: not a PyTorch file (it starts with {preview!r})")
    try:
        with warnings.catch_warnings():
            # torch warns (two lines) about any pickle protocol but 2 before the error below
            # says what is wrong in one.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on foreign or damaged files
        text = str(e)
        if is_pickle and "Unsupported operand" in text:  # a bare pickle.dump, not torch.save's format
            raise UserError(
                f"{path} is not a readable checkpoint: a plain Python pickle, not a file written by torch.save; "
                "use a checkpoint written by `alexnet train`"
            ) from None
        if "Weights only load failed" in text or "Unsupported global" in text or "weights_only" in text:
            raise UserError(
                f"{path} is not a readable checkpoint: it holds pickled Python objects, not just tensors and plain "
                "data, and alexnet never unpickles code; use a checkpoint written by `alexnet train`"
            ) from None
        if is_zip and not zipfile.is_zipfile(path) or "central directory" in text or "failed finding" in text:
            raise UserError(f"{path} is not a readable checkpoint: it is truncated or damaged") from None
        reason = text.strip().splitlines()[0][:160] if text.strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint ({reason}); it may be truncated or not a PyTorch file") from None


# --------------------------------------------------------------------------- validation


class _Bad(Exception):
    """A field of the dict is missing or of the wrong type (message: which and why)."""


def _get(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str = "") -> Any:
    if key not in d:
        raise _Bad(f"missing {what}{key}")
    value = d[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _Bad(f"{what}{key} is a {type(value).__name__}")
    return value


def _positive(d: Mapping[str, Any], key: str, what: str = "") -> int:
    value = _get(d, key, int, what)
    if value < 1:
        raise _Bad(f"{what}{key} is {value}")
    return value


def _numbers(d: Mapping[str, Any], key: str, n: int, what: str) -> tuple[float, ...]:
    value = _get(d, key, (list, tuple), what)
    if len(value) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise _Bad(f"{what}{key} is not {n} numbers")
    return tuple(float(v) for v in value)


def _parse(d: Any, source: str) -> Checkpoint:
    if not isinstance(d, dict) or d.get("kind") != KIND:
        raise UserError(
            f"{source} is not an alexnet checkpoint (a bare state_dict or another program's file?); "
            "train one with `alexnet train` or load weights with alexnet.models.create(...).load_state_dict"
        )
    version = d.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{source} is a damaged checkpoint (format_version is {one_line(version)})")
    if version > FORMAT_VERSION:
        raise UserError(f"{source} was written by a newer alexnet (format {version}); upgrade alexnet")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise UserError(f"{source} is an incomplete checkpoint (missing {', '.join(missing)})")
    try:
        return _parse_fields(d, source)
    except _Bad as e:
        raise UserError(f"{source} is a damaged checkpoint ({e})") from None


def _parse_fields(d: dict[str, Any], source: str) -> Checkpoint:
    weights = _get(d, "model", dict)
    if not weights or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise _Bad("model is not a state_dict of named tensors")
    model_name = _get(d, "model_name", str)
    options = _get(d, "model_options", dict)
    if not all(isinstance(k, str) for k in options):
        raise _Bad("model_options has a key that is not a name")
    num_classes = _positive(d, "num_classes")
    # Class names are made up when absent: a count no layer of the weights has (10^9) is refused
    # before it costs memory.
    if not any(t.ndim and t.shape[0] == num_classes for t in weights.values()):
        raise _Bad(f"num_classes is {num_classes}, but no layer of the weights has that many outputs")
    classes = _get(d, "classes", (list, tuple))
    if not all(isinstance(c, str) for c in classes) or len(classes) not in (0, num_classes):
        raise _Bad(f"classes is not a list of {num_classes} names")
    classes = tuple(classes) if classes else tuple(str(i) for i in range(num_classes))
    data = _parse_data(_get(d, "data", dict))
    p = d.get("progress", {})
    if not isinstance(p, dict):
        raise _Bad("progress is not a dict")
    progress = Progress(
        epoch=_get(d, "epoch", int) if "epoch" in d else 0,
        step_in_epoch=_get(d, "step_in_epoch", int) if "step_in_epoch" in d else 0,
        global_step=_get(d, "step", int) if "step" in d else 0,
        train_seconds=float(_get(p, "train_seconds", (int, float), "progress.")) if "train_seconds" in p else 0.0,
        epoch_seconds=float(_get(p, "epoch_seconds", (int, float), "progress.")) if "epoch_seconds" in p else 0.0,
        best_val_top1_err=float(_get(p, "best_val_top1_err", (int, float), "progress."))
        if "best_val_top1_err" in p else math.inf,
        history=list(_get(p, "history", list, "progress.")) if "history" in p else [],
        meter=_parse_meter(p.get("meter")),
    )  # fmt: skip
    if not all(isinstance(r, dict) for r in progress.history):
        raise _Bad("progress.history is not a list of records")
    ckpt = Checkpoint(weights, model_name, _saved(model_name, options), classes, data, progress, source=source)
    if all(k in d for k in TRAINING_STATE):
        ckpt.optimizer = _get(d, "optimizer", dict)
        ckpt.scheduler = _get(d, "scheduler", dict)
        rng = _get(d, "rng", list)
        if not rng or not all(isinstance(r, dict) and isinstance(r.get("torch"), torch.Tensor) for r in rng):
            raise _Bad("rng is not a list of RNG states")
        ckpt.rng = rng
        ckpt.config = _get(d, "config", dict)
    elif "config" in d:  # a model-only file may still say what it was trained on
        ckpt.config = _get(d, "config", dict)
    return ckpt


def _parse_data(data: dict[str, Any]) -> DataSpec:
    name = data.get("name", "")
    synthetic = data.get("synthetic", False)
    if not isinstance(name, str) or not isinstance(synthetic, bool):
        raise _Bad("data.name or data.synthetic has the wrong type")
    flat = _parse_flat_convention(data)  # every checkpoint has these fields (the record came later)
    record = data.get("convention")
    if record is None:  # written before the record: derived from the fields
        return DataSpec.of(name, synthetic, flat)
    if not isinstance(record, dict):
        raise _Bad("data.convention is not a record")
    try:
        convention = InputConvention.from_dict(record)
    except ValueError as e:
        raise _Bad(f"data.convention: {e}") from None
    plain = InputConvention(convention.channels, convention.image_size, convention.crop, convention.norm)
    if not plain.same_as(flat):  # a hand-edited file: which of the two would the model want?
        raise _Bad("data.convention disagrees with data's channels, image_size, crop or normalisation")
    return DataSpec.of(name, synthetic, convention)


def _parse_flat_convention(data: dict[str, Any]) -> InputConvention:
    channels = _positive(data, "channels", "data.")
    image_size, crop = _positive(data, "image_size", "data."), _positive(data, "crop", "data.")
    mean, std = _numbers(data, "mean", channels, "data."), _numbers(data, "std", channels, "data.")
    if not all(s > 0 for s in std):
        raise _Bad("data.std has a value <= 0")
    mean_image = data.get("mean_image")
    if mean_image is not None and (
        not isinstance(mean_image, torch.Tensor) or tuple(mean_image.shape) != (channels, image_size, image_size)
    ):
        raise _Bad(f"data.mean_image is not a {channels}x{image_size}x{image_size} tensor")
    convention = InputConvention(channels, image_size, crop, InputNorm(mean, std, mean_image))
    why = convention.error()
    if why:
        raise _Bad(f"data: {why}")
    return convention


def _parse_meter(meter: Any) -> dict[str, float] | None:
    if meter is None:
        return None
    if not isinstance(meter, dict) or not all(
        isinstance(meter.get(k), (int, float)) and not isinstance(meter.get(k), bool)
        for k in ("loss_sum", "top1", "top5", "count")
    ):
        raise _Bad("progress.meter is not a dict of sums")
    return dict(meter)
