"""Where in the image a prediction comes from: occlusion sensitivity and Grad-CAM.

* **Occlusion** (Zeiler & Fergus 2014, Figure 7): a grey square is slid over the image and the
  probability of the class is recorded; a pixel's value is the mean drop of that probability
  over the squares that cover it. Grey is the input's mean (0 after normalisation). The squares
  go to the network in batches, so a map costs a few batched forward passes.
* **Grad-CAM** (Selvaraju et al. 2017): the last convolutional layer's maps (after the ReLU),
  each weighted by the mean gradient of the class score over its positions, summed, rectified
  and enlarged to the input (bilinear). One forward and one backward pass.

Both work on any ``nn.Module`` and a normalised ``1 x C x H x W`` input; they equal Captum's
``Occlusion`` and ``LayerGradCam`` on the same model (tests/test_saliency.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.errors import UserError

METHODS = ("gradcam", "occlusion")


@dataclass(frozen=True)
class Occlusion:
    """The sliding square: side ``window`` and ``stride`` in input pixels."""

    window: int
    stride: int

    @classmethod
    def for_side(cls, side: int) -> Occlusion:
        """A fifth of the image, moved by half its side: 9 x 9 positions on 227, 224 and 28 px
        images (45 px squares every 23 px on 227 px; 6 every 3 on 28 px)."""
        window = max(2, round(side / 5))
        return cls(window, max(1, (window + 1) // 2))

    def starts(self, side: int) -> list[int]:
        """Where the squares start along a side of ``side`` pixels: every ``stride``, and one more
        ending on the image's edge so that every pixel is covered."""
        starts = list(range(0, side - self.window + 1, self.stride))
        return starts if starts[-1] == side - self.window else [*starts, side - self.window]


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM weighs: the last convolution of ``model.features``, or the
    activation right after it (the rectified maps, as in the Grad-CAM paper)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise UserError(f"{type(model).__name__} has no convolutional part (features) to explain")
    children = list(features.children())
    last = max((i for i, m in enumerate(children) if isinstance(m, nn.Conv2d)), default=None)
    if last is None:
        raise UserError(f"{type(model).__name__} has no convolution")
    after = children[last + 1] if last + 1 < len(children) else None
    return after if isinstance(after, (nn.ReLU, nn.Tanh)) else children[last]


@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, target: int, shape: Occlusion | None = None,
              batch_size: int = 64) -> torch.Tensor:  # fmt: skip
    """``H x W`` map of the drop in ``target``'s softmax probability when a square of
    ``shape`` (default :meth:`Occlusion.for_side`) centred near each pixel is set to 0 (the mean)."""
    _, _, h, w = x.shape
    shape = shape or Occlusion.for_side(min(h, w))
    base = model(x).float().softmax(1)[0, target]
    if shape.window > min(h, w):
        raise UserError(f"the occluding square ({shape.window} px) is larger than the image ({h}x{w})")
    tops, lefts = shape.starts(h), shape.starts(w)
    boxes = [(t, left) for t in tops for left in lefts]
    drops = []
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = x.expand(len(chunk), -1, -1, -1).clone()
        for i, (t, left) in enumerate(chunk):
            batch[i, :, t : t + shape.window, left : left + shape.window] = 0
        drops.append(base - model(batch).float().softmax(1)[:, target])
    drop = torch.cat(drops).cpu()
    total = torch.zeros(h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    for d, (t, left) in zip(drop.tolist(), boxes):
        total[t : t + shape.window, left : left + shape.window] += d
        count[t : t + shape.window, left : left + shape.window] += 1
    return (total / count.clamp(min=1)).float()


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module | None = None) -> torch.Tensor:
    """``H x W`` Grad-CAM map of ``target`` at ``layer`` (default :func:`last_conv_layer`),
    rectified, bilinearly enlarged to the input; not normalised (0 where nothing supports it)."""
    layer = layer or last_conv_layer(model)
    maps: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: maps.append(out))
    try:
        with torch.enable_grad():
            score = model(x.detach().requires_grad_(True))[0, target]  # a graph even if the weights are frozen
            (grad,) = torch.autograd.grad(score, maps[0])
    finally:
        handle.remove()
    a, g = maps[0].detach().float(), grad.float()
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(1, keepdim=True).relu()
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].cpu()


def explain(model: nn.Module, x: torch.Tensor, method: str, target: int | None = None) -> tuple[torch.Tensor, int, float]:
    """The ``method`` map of normalised ``1 x C x H x W`` input ``x`` for ``target`` (default:
    the predicted class); returns (map, target, its probability)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use {' or '.join(METHODS)}")
    with torch.no_grad():
        probs = model(x).float().softmax(1)[0]
    target = int(probs.argmax()) if target is None else target
    heat = occlusion(model, x, target) if method == "occlusion" else grad_cam(model, x, target)
    return heat, target, float(probs[target])
