"""A model's input convention as plain data: what ONNX metadata and the HTTP API carry.

:class:`Preprocessing` is the :class:`~alexnet.evaluation.LoadedModel` input convention
(decode with :func:`alexnet.evaluation.load_image`, then normalise) without the network, so an
exported file can be used without the run folder it came from.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np
import torch

from alexnet.data.pipeline import InputNorm, input_convention_error
from alexnet.data.presets import Normalizer, centre_crop
from alexnet.errors import UserError
from alexnet.evaluation import LoadedModel

METADATA_KEY = "alexnet.preprocessing"


@dataclass(frozen=True)
class Preprocessing:
    """How image files become model input.

    Decode (``channels`` 3 = RGB, 1 = grayscale), resize the short side to ``image_size``,
    centre-crop ``crop``, then subtract the mean image (``C x image_size x image_size``,
    centre-cropped to ``crop``) or the per-channel ``mean`` and divide by ``std`` (0-255 units).
    """

    channels: int
    image_size: int
    crop: int
    norm: InputNorm

    @classmethod
    def of(cls, loaded: LoadedModel) -> Preprocessing:
        """The convention a loaded model was trained with."""
        return cls(loaded.channels, loaded.image_size, loaded.crop, loaded.norm)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``N,C,crop,crop`` (from :func:`alexnet.evaluation.load_image`) -> float32 model input.

        The step ``alexnet.evaluation.predict`` applies after decoding (mean image or per-channel
        mean/std; no std division with a mean image, as in the paper, section 2).
        """
        if self.norm.mean_image is not None:
            return batch.float() - centre_crop(self.norm.mean_image.to(batch.device).float(), self.crop)
        return Normalizer(self.norm.mean, self.norm.std)(batch)

    def to_json(self) -> str:
        """One JSON string (the mean image as base64 float32, little-endian, C-order)."""
        mean_image = None
        if self.norm.mean_image is not None:
            arr = self.norm.mean_image.detach().cpu().float().numpy().astype("<f4")
            mean_image = {"shape": list(arr.shape), "dtype": "float32", "base64": base64.b64encode(arr.tobytes()).decode()}
        return json.dumps({
            "format": 1,
            "layout": "NCHW",
            "colour": "RGB" if self.channels == 3 else "grayscale",
            "pixel_range": [0, 255],
            "resize": f"short side to {self.image_size} (bicubic, antialiased), centre {self.crop}x{self.crop} crop",
            "channels": self.channels, "image_size": self.image_size, "crop": self.crop,
            "mean": list(self.norm.mean), "std": list(self.norm.std), "mean_image": mean_image,
            "mean_image_note": "when set: subtract its centre crop, ignore mean/std",
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        """Inverse of :meth:`to_json`; a :class:`UserError` if the text is not one."""
        try:
            d = json.loads(text)
            channels, image_size, crop = int(d["channels"]), int(d["image_size"]), int(d["crop"])
            norm = InputNorm(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))
            why = input_convention_error(channels, image_size, crop, norm)  # bounded before any allocation
            if d.get("mean_image") and not why:
                m = d["mean_image"]
                raw = np.frombuffer(base64.b64decode(m["base64"]), dtype="<f4").reshape(m["shape"])
                norm = InputNorm(norm.mean, norm.std, torch.from_numpy(raw.astype(np.float32)))
                why = input_convention_error(channels, image_size, crop, norm)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"unreadable preprocessing metadata ({type(e).__name__}: {e})") from None
        if why:
            raise UserError(f"unusable preprocessing metadata: {why}")
        return cls(channels, image_size, crop, norm)
