"""Fine-tuning and linear probes from existing weights (``alexnet train --init-from``).

The standard way practitioners have used AlexNet since DeCAF (Donahue et al. 2013): start from
weights learned on a large dataset, replace the last layer (fc8) by a fresh one for the new
classes, and either train everything with a lower learning rate for the pretrained layers, or
freeze them and train only what follows (a linear probe on fc7 with ``--freeze features``).

Accepted weights:

* an ``alexnet`` checkpoint or run folder (from ``alexnet train``, or a Caffe import, which is
  written as an ordinary run folder);
* a bare torchvision AlexNet ``state_dict`` (torchvision's ImageNet weights file) for
  ``alexnet-owt``.

The input preprocessing follows the weights (the checkpoint's normalisation, or torchvision's
ImageNet mean/std), since the pretrained filters expect the inputs they were trained on;
``--init-norm data`` normalises with the new data's own statistics instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.checkpoint import KIND, Checkpoint, checkpoint_path, read_raw
from alexnet.data.pipeline import InputNorm
from alexnet.errors import UserError

FREEZE_CHOICES = ("none", "conv", "features")
# Layers (paper names, as in ``layers_by_role``) kept fixed by each --freeze choice. "features"
# is every layer below fc8: what remains trainable is a linear classifier on fc7 (DeCAF's probe).
FROZEN_LAYERS = {
    "none": (),
    "conv": ("conv1", "conv2", "conv3", "conv4", "conv5"),
    "features": ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"),
}
HEAD = "fc8"
INIT_NORMS = ("weights", "data")
# Model options that describe the architecture (and so must match the weights); the others
# (init, dropout) are training choices of the new run.
_ARCHITECTURE_OPTIONS = ("activation", "lrn", "lrn_convention", "lrn_k", "lrn_order", "lrn_scope", "pooling",
                         "towers", "widths", "fc_width")


@dataclass(frozen=True)
class Weights:
    """Pretrained weights read from a file, with what is needed to use them."""

    source: str
    model_name: str
    state: dict[str, torch.Tensor]
    options: dict[str, Any]  # the model options the weights were trained with
    classes: tuple[str, ...]
    channels: int
    crop: int | None  # input side the weights were trained on (None: any, torchvision's avgpool)
    norm: InputNorm

    def architecture_options(self) -> dict[str, Any]:
        """The model options the new model must share with these weights."""
        return {k: v for k, v in self.options.items() if k in _ARCHITECTURE_OPTIONS}


def read_weights(path: str | Path) -> Weights:
    """Read an alexnet checkpoint / run folder or a torchvision AlexNet state_dict (no code runs)."""
    from alexnet.evaluation import TORCHVISION_MEAN, TORCHVISION_STD

    file = checkpoint_path(path)  # a run folder -> its last.pt; messages name what the user gave
    raw = read_raw(file)  # read once; a damaged or foreign file is a one-line error here
    if isinstance(raw, dict) and raw.get("kind") != KIND and "features.0.weight" in raw:
        if "classifier.6.weight" not in raw:
            raise UserError(f"{path} looks like a torchvision AlexNet state_dict but has no classifier.6 (fc8)")
        return Weights(str(path), "alexnet-owt", raw, {}, (), raw["features.0.weight"].shape[1], None,
                       InputNorm(TORCHVISION_MEAN, TORCHVISION_STD))  # fmt: skip
    ckpt = Checkpoint.from_dict(raw, str(file)).to_dict()
    data = ckpt["data"]
    return Weights(
        str(path), ckpt["model_name"], ckpt["model"], dict(ckpt["model_options"]), tuple(ckpt["classes"]),
        data["channels"], data["crop"], InputNorm.from_dict(data),
    )  # fmt: skip


def check_model(weights: Weights, model_name: str) -> None:
    """One-line :class:`UserError` when the weights are not ``model_name``'s."""
    if weights.model_name != model_name:
        raise UserError(
            f"--init-from {weights.source} holds {weights.model_name} weights but the run trains {model_name}; "
            f"use --model {weights.model_name} (or drop --model)"
        )


def check_compatible(weights: Weights, model_name: str, channels: int, crop: int) -> None:
    """One-line :class:`UserError` when the weights cannot start a ``model_name`` run on data of
    ``channels`` channels and ``crop`` px inputs."""
    check_model(weights, model_name)
    if weights.channels != channels:
        kind = {1: "grayscale", 3: "RGB"}
        raise UserError(
            f"--init-from {weights.source} expects {kind.get(weights.channels, weights.channels)} input "
            f"({weights.channels} channel(s)) but the data has {channels}; prepare the images as "
            f"{kind.get(weights.channels, str(weights.channels) + '-channel')}"
        )
    if weights.crop is not None and weights.crop != crop:
        raise UserError(
            f"--init-from {weights.source} was trained on {weights.crop} px inputs but the data gives {crop} px; "
            f"prepare it with a matching --size"
        )


def head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the last layer (``fc8.`` or ``classifier.6.``)."""
    head = model.layers_by_role()[HEAD]
    return next(name for name, m in model.named_modules() if m is head) + "."


def load_into(model: nn.Module, weights: Weights, classes: tuple[str, ...]) -> bool:
    """Copy ``weights`` into ``model``; the last layer keeps its fresh initialisation unless the
    weights were trained on exactly ``classes``. Returns whether the last layer was replaced."""
    head = head_prefix(model)
    replace_head = tuple(weights.classes) != tuple(classes)
    state = {k: v for k, v in weights.state.items() if not (replace_head and k.startswith(head))}
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise UserError(
                f"--init-from {weights.source}: {key} has shape {tuple(value.shape)} in the weights but "
                f"{tuple(own[key].shape)} in the model; give the model options the weights were trained with"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (replace_head and k.startswith(head))]
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise UserError(f"--init-from {weights.source} does not fit {weights.model_name}: {what}")
    return replace_head


def freeze(model: nn.Module, choice: str) -> list[str]:
    """Stop gradients into the layers of ``choice`` (see :data:`FROZEN_LAYERS`); returns their
    names. Frozen parameters get no gradient, so SGD (momentum and weight decay included)
    leaves them bit-identical."""
    if choice not in FROZEN_LAYERS:
        raise UserError(f"--freeze must be one of {', '.join(FROZEN_LAYERS)}")
    layers = model.layers_by_role()
    for name in FROZEN_LAYERS[choice]:
        layers[name].requires_grad_(False)
    return list(FROZEN_LAYERS[choice])


def scale_pretrained_lr(optimizer: torch.optim.Optimizer, model: nn.Module, scale: float) -> None:
    """Split every parameter group into the last layer (lr unchanged) and the pretrained layers
    (lr x ``scale``), before any scheduler records the groups' initial rates. Schedulers scale
    each group's own rate, so the ratio holds for the whole run."""
    if scale == 1.0:
        return
    head = {id(p) for p in model.layers_by_role()[HEAD].parameters()}
    groups = []
    for group in optimizer.param_groups:
        for params, factor in (([p for p in group["params"] if id(p) in head], 1.0),
                               ([p for p in group["params"] if id(p) not in head], scale)):  # fmt: skip
            if params:
                groups.append({**group, "params": params, "lr": group["lr"] * factor})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def describe(weights: Weights, replaced_head: bool, frozen: list[str], scale: float) -> str:
    """One log line saying what was loaded and what trains."""
    head = "fc8 replaced for the new classes" if replaced_head else "fc8 kept (same classes)"
    rest = f"frozen: {', '.join(frozen)}" if frozen else f"pretrained layers at lr x {scale:g}"
    return f"initialised from {weights.source} ({weights.model_name}); {head}; {rest}"


def start(
    model: nn.Module,
    init_from: str | None,
    freeze_choice: str,
    init_norm: str,
    scale: float,
    model_name: str,
    dataset: Any,
    resume_checkpoint: Path | None,
    log: Any = None,
) -> InputNorm | None:
    """The trainer's entry point: load ``init_from`` into the fresh ``model`` (skipped on resume,
    where ``resume_checkpoint`` holds the weights), apply ``--freeze``, and return the input
    normalisation to use (``None``: the data's own). ``dataset`` is the run's Dataset."""
    if not init_from:
        return None
    if init_norm not in INIT_NORMS:
        raise UserError(f"--init-norm must be one of {', '.join(INIT_NORMS)}")
    frozen = freeze(model, freeze_choice)
    if resume_checkpoint is not None:  # the run's own checkpoint carries the weights and the norm
        return read_weights(resume_checkpoint).norm if init_norm == "weights" else None
    weights = read_weights(init_from)
    check_compatible(weights, model_name, dataset.info.channels, dataset.eval_crop)
    replaced = load_into(model, weights, dataset.info.classes)
    if log is not None:
        log(describe(weights, replaced, frozen, scale))
    return weights.norm if init_norm == "weights" else None


def resolve_model(init_from: str, model_name: str | None, model_options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and options of a run started from ``init_from``: the weights' own model
    and architecture unless given (then they must agree, checked when the weights load)."""
    weights = read_weights(init_from)
    if model_name:
        check_model(weights, model_name)
    return model_name or weights.model_name, weights.architecture_options() | model_options
