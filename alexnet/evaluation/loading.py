"""Torch models to use: an ``alexnet`` checkpoint or run folder, or a torchvision AlexNet state_dict.

:func:`load_model` gives a :class:`LoadedModel`: the network and its
:class:`~alexnet.data.convention.InputConvention` (a bare torchvision state_dict gets
torchvision's ImageNet convention, :mod:`alexnet.models.owt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet import models
from alexnet.checkpoint import KIND, Checkpoint, checkpoint_path, read_raw
from alexnet.data import Dataset
from alexnet.data.convention import InputConvention, InputNorm
from alexnet.data.resize import MAX_ENLARGEMENT, fit_input_size
from alexnet.errors import UserError
from alexnet.models.owt import TORCHVISION_CROP, TORCHVISION_IMAGE_SIZE, TORCHVISION_MEAN, TORCHVISION_STD


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names in label order (sorted WNIDs), shipped in the package."""
    text = resources.files("alexnet").joinpath("resources/imagenet_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000
    return names


def torchvision_convention(channels: int = 3) -> InputConvention:
    """The input convention of torchvision's ImageNet AlexNet weights."""
    return InputConvention(channels, TORCHVISION_IMAGE_SIZE, TORCHVISION_CROP, InputNorm(TORCHVISION_MEAN, TORCHVISION_STD))


@dataclass
class LoadedModel:
    """A torch model ready for inference and the input convention it was trained with."""

    model: nn.Module
    name: str
    classes: tuple[str, ...]
    convention: InputConvention
    source: str
    data_source: str | None = None  # the --data the model was trained on, if known
    # Started from other weights (--init-from): its data was fitted to their input size, so
    # evaluation fits data the same way (alexnet.data.resize).
    fits_input: bool = False
    origin: str = "checkpoint"  # or "torchvision": a bare torchvision state_dict

    @property
    def channels(self) -> int:
        return self.convention.channels

    @property
    def image_size(self) -> int:
        """Images are resized/cropped to this side first (256 for ImageNet)."""
        return self.convention.image_size

    @property
    def crop(self) -> int:
        """Then centre-cropped to this (227)."""
        return self.convention.crop

    @property
    def norm(self) -> InputNorm:
        return self.convention.norm


def display_classes(classes: list[str], num_classes: int) -> tuple[str, ...]:
    """Human-readable class names; ImageNet WNIDs become names from the shipped table."""
    if num_classes == 1000 and (not classes or all(c.startswith("n") and c[1:].isdigit() for c in classes)):
        return imagenet_class_names()
    return tuple(classes) if classes else tuple(str(i) for i in range(num_classes))


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    """Load an alexnet checkpoint (or run folder) or a torchvision AlexNet state_dict for inference."""
    given, path = Path(path), checkpoint_path(path)  # a run folder stays the model's name
    raw = read_raw(path)
    if isinstance(raw, dict) and raw.get("kind") != KIND and "features.0.weight" in raw:
        return _load_torchvision_state_dict(raw, given, device)
    ckpt = Checkpoint.from_dict(raw, str(path))
    model = ckpt.build_model().to(device).eval()
    data_source = ckpt.config.get("data")
    loaded = LoadedModel(
        model=model, name=ckpt.model_name, classes=display_classes(list(ckpt.classes), ckpt.num_classes),
        convention=ckpt.data.convention, source=str(given),
        data_source=data_source if isinstance(data_source, str) else None, fits_input=bool(ckpt.config.get("init_from")),
    )  # fmt: skip
    _check_takes_own_input(loaded)
    return loaded


def _check_takes_own_input(m: LoadedModel) -> None:
    """One line, not a traceback at the first image, when a checkpoint's input convention (its
    channels, its crop) does not fit its own network: a damaged or hand-edited file."""
    x = torch.zeros(1, m.channels, m.crop, m.crop, device=next(m.model.parameters()).device)
    try:
        with torch.inference_mode():
            m.model(x)
    except RuntimeError:
        raise UserError(f"{m.source} is a damaged checkpoint: its network does not take the {m.channels}-channel "
                        f"{m.crop}x{m.crop} images its data settings describe") from None  # fmt: skip


def _load_torchvision_state_dict(state: dict[str, Any], path: Path, device: torch.device) -> LoadedModel:
    num_classes = state["classifier.6.weight"].shape[0] if "classifier.6.weight" in state else 1000
    model = models.create("alexnet-owt", num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} looks like a torchvision AlexNet state_dict but does not fit: {str(e).splitlines()[0]}") from None
    return LoadedModel(model=model.to(device).eval(), name="alexnet-owt", classes=display_classes([], num_classes),
                       convention=torchvision_convention(), source=str(path), origin="torchvision")  # fmt: skip


def fit_input_to_model(m: LoadedModel, dataset: Dataset, data: str) -> tuple[Dataset, str | None]:
    """``dataset`` cropped or resized to the crop (and mean image side) of a model started from
    other weights, as its training fitted its data to them (``alexnet.data.resize``), with the
    line that says so; unchanged for other models, when the crops already fit, or when the
    images would have to be enlarged past sense."""
    side, crop = dataset.info.image_size, dataset.eval_crop
    if not m.fits_input or (crop == m.crop and (m.norm.mean_image is None or side == m.image_size)):
        return dataset, None
    if m.image_size / side > MAX_ENLARGEMENT:
        return dataset, None  # check_input_size says what does not fit
    how = "cropped" if side == m.image_size else f"resized to {m.image_size} px and cropped"
    note = f"input size: {m.source} takes {m.crop} px crops; the {side} px images of {data} are {how} to fit"
    return fit_input_size(dataset, m.image_size, m.crop), note


def check_dataset_order(m: LoadedModel) -> None:
    """Refuse, in one line, a model whose convention the dataset pipeline cannot honour: datasets
    hold RGB (or grey) 0-255 pixels, and ``InputPipeline`` applies only the normalisation."""
    c = m.convention
    if c.channel_order == "BGR" or c.pixel_scale != 255.0:
        raise UserError(f"{m.source} takes {c.channel_order} pixels scaled to 0-{c.pixel_scale:g}; datasets are fed as "
                        "RGB 0-255, so evaluate it with predict on image files")  # fmt: skip


def check_input_size(m: LoadedModel, dataset: Dataset, data: str) -> None:
    """Refuse data whose crops the model cannot take (a 32 px model on 64 px images), in one line."""
    side, crop = dataset.info.image_size, dataset.eval_crop
    if m.norm.mean_image is not None and tuple(m.norm.mean_image.shape[-2:]) != (side, side):
        raise UserError(f"{m.source} was trained on {m.image_size} px images (its mean image is that size) but {data} "
                        f"has {side} px images; evaluate it on data of its own size")  # fmt: skip
    x = torch.zeros(1, m.channels, crop, crop, device=next(m.model.parameters()).device)
    try:
        with torch.inference_mode():
            m.model(x)
    except RuntimeError:
        raise UserError(f"{m.source} takes {m.crop} px crops (trained on {m.image_size} px images) but {data} gives "
                        f"{crop} px crops; evaluate it on data of its own size") from None
