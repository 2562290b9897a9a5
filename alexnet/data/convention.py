"""A model's input convention, one typed record, and the one function that makes it a transform.

:class:`InputConvention` says what a model must be fed (timm's ``pretrained_cfg``): the eval
resize side, the crop the network takes, its channels and their order, the pixel scale and the
mean/std or mean image. Training writes it into every checkpoint, ``alexnet export`` into every
ONNX file's metadata, the Caffe import and the torchvision-weights loader fill it; files that
predate the record derive it from the fields they carry. :func:`eval_transform` (timm's
``create_transform``) turns it into the decode + normalise steps every prediction path uses.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from alexnet.data.presets import Normalizer, centre_crop
from alexnet.errors import one_line

# The largest image side (and crop) a checkpoint or an exported model may ask inputs to be
# resized to; the paper's is 256. Checked before any image is resized: a damaged or hostile
# file's 10^6 would make every prediction allocate terabytes.
MAX_IMAGE_SIDE = 1024
# The channel orders a network's input may have: RGB, Caffe's BGR, one grey channel (luma).
CHANNEL_ORDERS = ("RGB", "BGR", "L")
# How image files are brought to ``image_size`` (alexnet.data.prepare.convert.model_pixels).
RESIZE = "short side to image_size (bicubic, antialiased), centre square; alpha composited on white"
CONVENTION_VERSION = 2  # version 1: the ONNX metadata before channel_order and pixel_scale


@dataclass(frozen=True)
class InputNorm:
    """How pixels are normalised: the paper's mean image, or per-channel mean/std (in the units
    of :attr:`InputConvention.pixel_scale`, 0-255 for every model here)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    mean_image: torch.Tensor | None = None  # C x S x S; when set, subtract it (no std division)

    def __repr__(self) -> str:
        image = "None" if self.mean_image is None else "x".join(map(str, self.mean_image.shape)) + " tensor"
        return f"InputNorm(mean={self.mean}, std={self.std}, mean_image={image})"

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "mean_image": self.mean_image}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> InputNorm:
        return cls(tuple(d["mean"]), tuple(d["std"]), d.get("mean_image"))  # type: ignore[arg-type]

    @classmethod
    def identity(cls, channels: int) -> InputNorm:
        """No normalisation: raw pixels (a baseline's features, a Caffe net imported without a mean)."""
        return cls((0.0,) * channels, (1.0,) * channels)

    def same_as(self, other: InputNorm) -> bool:
        """Equal statistics (dataclass ``==`` cannot compare the mean image tensors)."""
        if (self.mean_image is None) != (other.mean_image is None):
            return False
        same_image = self.mean_image is None or torch.equal(self.mean_image, other.mean_image)
        return (self.mean, self.std) == (other.mean, other.std) and same_image


def input_convention_error(channels: int, image_size: int, crop: int, norm: InputNorm) -> str | None:
    """Why a stored input convention (a checkpoint's ``data``, an ONNX file's metadata) cannot be
    used, in a few words naming the field; None when it can."""
    if not 1 <= image_size <= MAX_IMAGE_SIDE:
        return f"image_size is {image_size}, outside 1..{MAX_IMAGE_SIDE}"
    if not 1 <= crop <= image_size:
        return f"crop is {crop}, outside 1..image_size ({image_size})"
    if len(norm.mean) != channels or len(norm.std) != channels:
        return f"the normalisation has {len(norm.mean)} means and {len(norm.std)} stds for {channels} channels"
    if not all(math.isfinite(v) for v in (*norm.mean, *norm.std)) or not all(s > 0 for s in norm.std):
        return "the normalisation has a mean or std that is not finite, or a std <= 0"
    if norm.mean_image is not None and tuple(norm.mean_image.shape) != (channels, image_size, image_size):
        return f"the mean image is not {channels}x{image_size}x{image_size}"
    return None


@dataclass(frozen=True, eq=False)
class InputConvention:
    """What a model's input must be.

    Attributes:
        channels: 3 (colour) or 1 (grey).
        image_size: images are resized (short side) and centre-squared to this side first (256).
        crop: the side of the centre crop the network takes (227, 224, 28 ...).
        norm: per-channel mean/std, or the mean image (``C x image_size x image_size``, its centre
            crop is subtracted, no std division: the paper's section 2).
        channel_order: ``RGB``, ``BGR`` (a network that kept Caffe's order) or ``L`` (grey);
            mean/std and the mean image are in this order.
        pixel_scale: the value of a white pixel before normalisation (255: mean/std in 0-255 units).
    """

    channels: int
    image_size: int
    crop: int
    norm: InputNorm
    channel_order: str = ""  # "" = the order the channel count implies: L for one channel, else RGB
    pixel_scale: float = 255.0
    resize: str = field(default=RESIZE, repr=False)

    def __post_init__(self) -> None:
        if not self.channel_order:
            object.__setattr__(self, "channel_order", "L" if self.channels == 1 else "RGB")

    def error(self) -> str | None:
        """Why this record cannot be used (a damaged or hostile file's), or None."""
        why = input_convention_error(self.channels, self.image_size, self.crop, self.norm)
        if why:
            return why
        if self.channel_order not in CHANNEL_ORDERS or (self.channel_order == "L") != (self.channels == 1):
            return f"channel_order {one_line(self.channel_order)} does not fit {self.channels} channels"
        if not (math.isfinite(self.pixel_scale) and self.pixel_scale > 0):
            return f"pixel_scale is {self.pixel_scale}"
        return None

    def same_as(self, other: InputConvention) -> bool:
        """Whether a model of ``other`` is fed exactly the pixels a model of this one is."""
        mine = (self.channels, self.image_size, self.crop, self.channel_order, self.pixel_scale)
        theirs = (other.channels, other.image_size, other.crop, other.channel_order, other.pixel_scale)
        return mine == theirs and self.norm.same_as(other.norm)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data with the mean image as a tensor (what a checkpoint stores)."""
        return {
            "version": CONVENTION_VERSION, "channels": self.channels, "image_size": self.image_size, "crop": self.crop,
            "channel_order": self.channel_order, "pixel_scale": self.pixel_scale, "resize": self.resize,
            **self.norm.to_dict(),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputConvention:
        """Inverse of :meth:`to_dict` (a record without ``channel_order``/``pixel_scale``, as older
        files carry, gets the defaults); ``ValueError`` naming the field when it is unusable."""
        try:
            channels, image_size, crop = _int(d["channels"]), _int(d["image_size"]), _int(d["crop"])
            norm = InputNorm(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))
            order, scale = str(d.get("channel_order") or ""), float(d.get("pixel_scale", 255.0))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None
        conv = cls(channels, image_size, crop, norm, order, scale)
        why = conv.error()  # bounded before the mean image is read
        mean_image = d.get("mean_image")
        if mean_image is not None and not why:
            if not isinstance(mean_image, torch.Tensor):
                raise ValueError("the mean image is not a tensor")
            conv = cls(channels, image_size, crop, InputNorm(norm.mean, norm.std, mean_image), order, scale)
            why = conv.error()
        if why:
            raise ValueError(why)
        return conv

    def to_json(self) -> str:
        """One JSON string (the mean image as base64 float32, little-endian, C-order): ONNX metadata."""
        d = self.to_dict()
        if self.norm.mean_image is not None:
            arr = self.norm.mean_image.detach().cpu().float().numpy().astype("<f4")
            d["mean_image"] = {"shape": list(arr.shape), "dtype": "float32", "base64": base64.b64encode(arr.tobytes()).decode()}
        d |= {"format": CONVENTION_VERSION, "layout": "NCHW", "mean_image_note": "when set: subtract its centre crop, ignore mean/std"}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> InputConvention:
        """Inverse of :meth:`to_json` (version 1 files too); ``ValueError`` when the text is not one."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise TypeError("not a JSON object")
            m = d.pop("mean_image", None)
            conv = cls.from_dict(d)  # checked before the mean image is decoded
            if m:
                raw = np.frombuffer(base64.b64decode(m["base64"]), dtype="<f4").reshape(m["shape"])
                conv = cls.from_dict({**conv.to_dict(), "mean_image": torch.from_numpy(raw.astype(np.float32))})
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None
        return conv


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{one_line(value)} is not a whole number")
    return int(value)


@dataclass(frozen=True, eq=False)
class EvalTransform:
    """An :class:`InputConvention` as the steps that bring an image file to the network:
    :meth:`decode` (bytes -> uint8 ``C x crop x crop`` in the network's channel order) and
    :meth:`normalize` (a uint8 batch of those -> float32 network input)."""

    convention: InputConvention

    def decode(self, data: bytes) -> torch.Tensor:
        """The encoded image ``data`` as the network sees it before normalisation: decoded and
        resized like the training data (``model_pixels``), centre-cropped, channels in the
        network's order. Raises ``alexnet.data.prepare.convert.ConversionError``."""
        from alexnet.data.prepare.convert import model_pixels  # Pillow: loaded when an image is

        c = self.convention
        pixels = torch.from_numpy(model_pixels(data, c.channels, c.image_size).copy()).permute(2, 0, 1)
        if c.channel_order == "BGR":
            pixels = pixels.flip(0)
        return centre_crop(pixels, c.crop).contiguous()

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``N,C,crop,crop`` -> float32: scaled to ``pixel_scale``, minus the mean image's
        centre crop, or minus mean and divided by std per channel."""
        c = self.convention
        x = batch if c.pixel_scale == 255.0 else batch.float() * (c.pixel_scale / 255.0)
        if c.norm.mean_image is not None:
            return x.float() - centre_crop(c.norm.mean_image.to(batch.device).float(), c.crop)
        return Normalizer(c.norm.mean, c.norm.std)(x)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.normalize(batch)


def eval_transform(convention: InputConvention) -> EvalTransform:
    """The one eval transform of a model's input convention (see :class:`EvalTransform`)."""
    return EvalTransform(convention)
