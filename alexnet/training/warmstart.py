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

What differs between the weights and the data is adapted rather than refused, each choice
stated in one log line and in the run's ``config.json`` (``warm_start``):

* **channels** (grayscale weights on RGB data and back): conv1 is adapted as timm's
  ``adapt_input_conv`` does, and the normalisation record with it, so that the adapted net
  gives the original logits on a grayscale image replicated to RGB (see
  :func:`adapt_input_channels` for where the maths allows exactness);
* **input size**: the data is cropped or resized to the weights' crop in the input pipeline
  (:func:`input_size_for`, applied by :mod:`alexnet.data.resize`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.checkpoint import KIND, Checkpoint, checkpoint_path, read_raw
from alexnet.data.dataset import Dataset
from alexnet.data.pipeline import InputNorm
from alexnet.data.resize import MAX_ENLARGEMENT, fit_input_size
from alexnet.errors import UserError
from alexnet.runfolder import read_config

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
    image_size: int  # side of the images the crops were taken from (the mean image's side)
    crop: int  # input side the weights were trained on
    norm: InputNorm

    def architecture_options(self) -> dict[str, Any]:
        """The model options the new model must share with these weights."""
        return {k: v for k, v in self.options.items() if k in _ARCHITECTURE_OPTIONS}


def read_weights(path: str | Path) -> Weights:
    """Read an alexnet checkpoint / run folder or a torchvision AlexNet state_dict (no code runs)."""
    from alexnet.evaluation.loading import torchvision_convention

    file = checkpoint_path(path)  # a run folder -> its last.pt; messages name what the user gave
    raw = read_raw(file)  # read once; a damaged or foreign file is a one-line error here
    if isinstance(raw, dict) and raw.get("kind") != KIND and "features.0.weight" in raw:
        if "classifier.6.weight" not in raw:
            raise UserError(f"{path} looks like a torchvision AlexNet state_dict but has no classifier.6 (fc8)")
        tv = torchvision_convention()
        return Weights(str(path), "alexnet-owt", raw, {}, (), raw["features.0.weight"].shape[1], tv.image_size, tv.crop,
                       tv.norm)  # fmt: skip
    ckpt = Checkpoint.from_dict(raw, str(file)).to_dict()
    data = ckpt["data"]
    return Weights(
        str(path), ckpt["model_name"], ckpt["model"], dict(ckpt["model_options"]), tuple(ckpt["classes"]),
        data["channels"], data["image_size"], data["crop"], InputNorm.from_dict(data),
    )  # fmt: skip


def check_model(weights: Weights, model_name: str) -> None:
    """One-line :class:`UserError` when the weights are not ``model_name``'s."""
    if weights.model_name != model_name:
        raise UserError(
            f"--init-from {weights.source} holds {weights.model_name} weights but the run trains {model_name}; "
            f"use --model {weights.model_name} (or drop --model)"
        )


_KIND = {1: "grayscale", 3: "RGB"}
# Cropping (rather than resizing) to the weights' crop while the crop keeps at least this
# fraction of the image side: the paper's 227 of 256 and torchvision's 224 of 256 are 0.89 and
# 0.875, so such a crop still frames the whole object as the weights saw it.
MIN_CROP_FRACTION = 0.75


def check_channels(weights: Weights, channels: int) -> None:
    """One-line :class:`UserError` when conv1 cannot be adapted from the weights' channels to ``channels``."""
    if weights.channels != channels and {weights.channels, channels} != {1, 3}:
        raise UserError(
            f"--init-from {weights.source} takes {_KIND.get(weights.channels, weights.channels)} input "
            f"({weights.channels} channel(s)) and only 1 <-> 3 channels can be adapted, but the data has {channels}; "
            f"prepare the images with `alexnet prepare SOURCE OUT --channels {weights.channels}`"
        )


def input_size_for(weights: Weights, image_size: int, crop: int, data: str) -> tuple[int, int] | None:
    """The ``(image side, crop)`` the data must be mapped to for ``weights`` (None: as it is).

    The crop is always the weights' own. Weights normalised with a mean image need images of
    its side. Otherwise the images are only cropped when the weights' crop fits in them and
    frames most of the picture (:data:`MIN_CROP_FRACTION`), else resized so that the weights'
    crop frames what the data's own crop framed (28 px weights, 72 px images cropped to 64:
    resized to 32, cropped to 28).
    """
    side, want = image_size, weights.crop
    if weights.norm.mean_image is not None:
        target = int(weights.norm.mean_image.shape[-1])
        if (target, want) == (side, crop):
            return None
    elif crop == want:
        return None
    elif want <= side and want >= MIN_CROP_FRACTION * side:
        return side, want
    else:
        target = max(want, round(side * want / crop))
    if target / side > MAX_ENLARGEMENT:
        raise UserError(
            f"--init-from {weights.source} takes {want} px crops but {data} has {side} px images: enlarging them "
            f"{target / side:.0f}x invents the detail the weights look for; train from scratch instead "
            f"(alexnet train --data {data})"
        )
    return target, want


def fit_data(weights: Weights, dataset: Dataset, data: str) -> tuple[Dataset, str | None]:
    """``dataset`` mapped to the weights' input size (:func:`input_size_for`), and the one line
    that says how (None when nothing changed)."""
    info = dataset.info
    target = input_size_for(weights, info.image_size, dataset.eval_crop, data)
    if target is None:
        return dataset, None
    side, crop = target
    resized = f"resized from {info.image_size} to {side} px" + (f" and cropped to {crop} px" if crop != side else "")
    how = f"cropped to {crop} px" if side == info.image_size else resized
    note = (f"input size: {weights.source} was trained on {crop} px crops; the data's {info.image_size} px images "
            f"are {how} in the input pipeline")  # fmt: skip
    return fit_input_size(dataset, side, crop), note


def adapt_input_channels(
    weight: torch.Tensor, bias: torch.Tensor | None, norm: InputNorm, channels: int, padded: bool
) -> tuple[torch.Tensor, torch.Tensor | None, InputNorm, str]:
    """conv1's ``weight`` (``out, C, k, k``) and ``bias`` and the input normalisation ``norm``
    adapted to ``channels`` input channels (1 <-> 3), with the one line that says how.

    timm's ``adapt_input_conv``, carried through the normalisation so that the adapted net on a
    grayscale image ``g`` equals the original on ``g`` replicated to RGB:

    * 1 -> 3: the kernel is repeated over R, G, B and divided by 3; mean and std (or the mean
      image) are repeated per channel. Exact: each channel sees ``(g - m) / s``.
    * 3 -> 1: the R, G, B kernels are summed, each scaled by ``s' / s_c`` (``s'``, ``m'``: the
      channel averages, the new record), and the offsets ``sum W_c (m' - m_c) / s_c`` are folded
      into the bias. Exact where the kernel lies inside the image, so everywhere for an unpadded
      conv1 (the paper's) or equal channel means; near a zero-padded border the original saw the
      padding as the colour ``(m_R, m_G, m_B)``, which no grayscale input can be. With a mean
      image (no std) the per-pixel channel differences are folded in on average, so it is exact
      only where the mean image's channels are equal.
    """
    have = weight.shape[1]
    w = weight.double()
    mean, std = torch.tensor(norm.mean, dtype=torch.float64), torch.tensor(norm.std, dtype=torch.float64)
    if have == 1 and channels == 3:
        image = norm.mean_image.repeat(3, 1, 1) if norm.mean_image is not None else None
        adapted = InputNorm(norm.mean * 3, norm.std * 3, image)
        note = ("conv1 adapted from grayscale to RGB (timm's adapt_input_conv): the kernel repeated over R, G, B and "
                "divided by 3, the normalisation repeated per channel; exact on grayscale images replicated to RGB")  # fmt: skip
        return (w.repeat(1, 3, 1, 1) / 3).to(weight.dtype), bias, adapted, note
    if have != 3 or channels != 1:
        raise ValueError(f"conv1 adapts between 1 and 3 channels, not {have} -> {channels}")
    if norm.mean_image is not None:
        image = norm.mean_image.double()
        grey = image.mean(0, keepdim=True)
        new_w = w.sum(1, keepdim=True)
        offset = (grey - image).mean((1, 2))  # per channel, averaged over the pixels
        exact = bool(torch.equal(image, grey.expand_as(image)))
        adapted = InputNorm((float(mean.mean()),), (float(std.mean()),), grey.to(norm.mean_image.dtype))
    else:
        m1, s1 = mean.mean(), std.mean()
        new_w = (w * (s1 / std).view(1, 3, 1, 1)).sum(1, keepdim=True)
        offset = (m1 - mean) / std
        exact = not padded or bool((mean == m1).all())
        adapted = InputNorm((float(m1),), (float(s1),))
    new_b = bias
    if bias is not None:
        new_b = (bias.double() + (w.sum((2, 3)) * offset.view(1, 3)).sum(1)).to(bias.dtype)
    where = ("exact on RGB images with R = G = B" if exact else
             "exact on RGB images with R = G = B away from conv1's zero-padded border" if norm.mean_image is None else
             "close to (not exactly) the original on RGB images with R = G = B: the mean image's channels differ")  # fmt: skip
    note = ("conv1 adapted from RGB to grayscale (timm's adapt_input_conv): the R, G, B kernels summed, each scaled "
            f"by the ratio of the standard deviations, the channel means folded into the bias; {where}")  # fmt: skip
    return new_w.to(weight.dtype), new_b, adapted, note


def _prefix(model: nn.Module, role: str) -> str:
    """State-dict prefix of the layer ``role`` (``conv1``, ``fc8``, ...)."""
    layer = model.layers_by_role()[role]
    return next(name for name, m in model.named_modules() if m is layer) + "."


def adapt_weights(model: nn.Module, weights: Weights) -> tuple[Weights, str | None]:
    """``weights`` with conv1 and the normalisation adapted to ``model``'s input channels
    (:func:`adapt_input_channels`), and the line that says how (None when they already match)."""
    conv = model.layers_by_role()["conv1"]
    if conv.in_channels == weights.channels:
        return weights, None
    check_channels(weights, conv.in_channels)
    key = _prefix(model, "conv1")
    if key + "weight" not in weights.state:
        raise UserError(f"--init-from {weights.source} does not fit {weights.model_name}: missing {key}weight")
    padded = any(p > 0 for p in conv.padding) if isinstance(conv.padding, tuple) else conv.padding != "valid"
    w, b, norm, note = adapt_input_channels(weights.state[key + "weight"], weights.state.get(key + "bias"),
                                            weights.norm, conv.in_channels, padded)  # fmt: skip
    state = dict(weights.state) | {key + "weight": w} | ({key + "bias": b} if b is not None else {})
    return replace(weights, state=state, channels=conv.in_channels, norm=norm), note


def head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the last layer (``fc8.`` or ``classifier.6.``)."""
    return _prefix(model, HEAD)


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


def linear_probe(freeze_choice: str) -> bool:
    """Whether only fc8 trains. A linear classifier on fixed features is a convex problem that the
    step-scaled default rate (``lr_finder.step_scaled_lr``, measured on whole networks trained
    from scratch, where a high rate kills units) was not made for: such a run keeps its recipe's
    rate (measured in docs/RESULTS.md, fine-tuning across what differs)."""
    return freeze_choice == "features"


def probe_lr_note(recipe: Any) -> str:
    """The log line of a linear probe's default rate."""
    return (f"--freeze features trains a linear classifier on fixed features: lr {recipe.lr:g} of recipe "
            f"{recipe.name!r}, not scaled to the run's steps; give --lr to set it")  # fmt: skip


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


@dataclass
class WarmStart:
    """The weights a run starts from, the data fitted to them, and what was adapted.

    On resume ``weights`` is the run's own checkpoint (already adapted), which fixes the input
    size and normalisation the run was started with.
    """

    weights: Weights
    dataset: Dataset
    resumed: bool
    notes: dict[str, str] = field(default_factory=dict)  # config.json's "warm_start": what was adapted, and how


def prepare(
    init_from: str | None, model_name: str, dataset: Dataset, data: str, resume_checkpoint: Path | None, log: Any = None
) -> WarmStart | None:
    """Read ``init_from`` (on resume: the run's checkpoint) and fit ``dataset`` to its input size;
    None without ``init_from``. Called before the model is built, whose input side and channels
    follow the (fitted) data."""
    if not init_from:
        return None
    if resume_checkpoint is not None:
        own = read_weights(resume_checkpoint)
        return WarmStart(own, fit_input_size(dataset, own.image_size, own.crop), True, _recorded_notes(resume_checkpoint))
    weights = read_weights(init_from)
    check_model(weights, model_name)
    check_channels(weights, dataset.info.channels)
    dataset, note = fit_data(weights, dataset, data)
    warm = WarmStart(weights, dataset, False)
    if note:
        warm.notes["input_size"] = note
        if log is not None:
            log(note)
    return warm


def _recorded_notes(checkpoint: Path) -> dict[str, str]:
    """What the run's start adapted, from its ``config.json`` (a resumed run keeps the record)."""
    try:
        notes = (read_config(Path(checkpoint).parent.parent) or {}).get("warm_start")
    except UserError:
        return {}
    return {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}


def start(
    model: nn.Module, warm: WarmStart | None, freeze_choice: str, init_norm: str, scale: float, log: Any = None
) -> InputNorm | None:
    """The trainer's entry point once the model is built: load the weights of ``warm`` into the
    fresh ``model`` (skipped on resume, where the run's checkpoint holds them), adapting conv1
    to the data's channels, apply ``--freeze``, and return the input normalisation to use
    (``None``: the data's own)."""
    if warm is None:
        return None
    if init_norm not in INIT_NORMS:
        raise UserError(f"--init-norm must be one of {', '.join(INIT_NORMS)}")
    frozen = freeze(model, freeze_choice)  # an adapted conv1 is frozen like the rest
    if warm.resumed:  # the run's own checkpoint carries the weights and the norm
        return warm.weights.norm if init_norm == "weights" else None
    weights, note = adapt_weights(model, warm.weights)
    if note:
        if init_norm == "data":  # the equality holds for the weights' normalisation, not the data's
            note += " (with the weights' normalisation; --init-norm data normalises with the data's own)"
        warm.notes["conv1"] = note
        if log is not None:
            log(note)
    replaced = load_into(model, weights, warm.dataset.info.classes)
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
