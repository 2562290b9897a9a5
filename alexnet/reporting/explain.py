"""``alexnet explain`` and ``POST /v1/explain``: a saliency map of one image through a predictor's
network (:mod:`alexnet.evaluation.saliency`), and the map drawn over the image."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alexnet.errors import UserError
from alexnet.evaluation.saliency import METHODS, explain
from alexnet.inference import Predictor
from alexnet.runtime import autocast

NO_LAYERS = "a linear SVM on hand-made features (HOG, SIFT, pixels) has no layers to show; explain needs a network"
HOT = torch.tensor([230.0, 40.0, 20.0]).view(3, 1, 1)  # where the evidence is
COLD = torch.tensor([30.0, 90.0, 220.0]).view(3, 1, 1)  # occlusion: where hiding the image helps the class


@dataclass
class Explanation:
    """One image's map: ``heat`` (input size) for class ``index`` (``label``, its probability)."""

    method: str
    heat: torch.Tensor
    index: int
    label: str
    probability: float
    seconds: float

    def to_dict(self, with_map: bool = True) -> dict[str, Any]:
        """JSON-ready: the class record, the time, and the map as rows of numbers (4 significant digits)."""
        d: dict[str, Any] = {"method": self.method, "class": self.label, "index": self.index,
                             "probability": self.probability, "seconds": round(self.seconds, 4),
                             "height": self.heat.shape[0], "width": self.heat.shape[1]}  # fmt: skip
        if with_map:
            d["map"] = [[float(f"{v:.4g}") for v in row] for row in self.heat.tolist()]
        return d


def explain_pixels(predictor: Predictor, pixels: torch.Tensor, method: str, target: int | None = None) -> Explanation:
    """The ``method`` map of a decoded image (uint8 ``C x crop x crop``, :meth:`Predictor.decode`)
    for ``target`` (default: the predicted class), through the predictor's network."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use {' or '.join(METHODS)}")
    if predictor.kind == "baseline":
        raise UserError(f"{predictor.source}: {NO_LAYERS}")
    loaded = predictor.require_network(f"explain ({method})")
    if target is not None and not 0 <= target < len(predictor.classes):
        raise UserError(f"class index {target} is out of range (the model has {len(predictor.classes)} classes)")
    x = predictor.transform.normalize(pixels[None].to(predictor.device))
    started = time.perf_counter()
    # The predictor's lock: a map hooks the shared network, so no other request may run it meanwhile.
    with predictor.lock, autocast(predictor.device, predictor.precision):
        heat, index, probability = explain(loaded.model.eval(), x, method, target)
    return Explanation(method, heat.float(), index, predictor.classes[index], probability, time.perf_counter() - started)


def overlay(pixels: torch.Tensor, heat: torch.Tensor, bgr: bool = False) -> torch.Tensor:
    """``heat`` drawn over the image (uint8 ``C x H x W``, 1 or 3 channels; ``bgr``: in Caffe's
    order) as uint8 RGB: the image in grey, positive values in red, negative in blue, each
    scaled by the largest magnitude."""
    image = pixels.float()
    if image.shape[0] == 3:
        image = (image.flip(0) if bgr else image).mean(0, keepdim=True)
    grey = image.expand(3, -1, -1)
    scale = float(heat.abs().max())
    level = (heat / scale if scale > 0 else torch.zeros_like(heat)).clamp(-1, 1)[None]
    alpha = 0.7 * level.abs()
    colour = torch.where(level >= 0, HOT, COLD)
    return (grey * (1 - alpha) + colour * alpha).round().clamp(0, 255).to(torch.uint8)


def overlay_png(pixels: torch.Tensor, heat: torch.Tensor, bgr: bool = False, side: int = 256) -> bytes:
    """:func:`overlay` as PNG bytes, enlarged to about ``side`` pixels."""
    import io

    from PIL import Image

    rgb = overlay(pixels, heat, bgr).permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(rgb))
    scale = max(1, side // max(img.size))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
