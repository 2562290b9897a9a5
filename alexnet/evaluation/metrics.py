"""Top-1/top-5 error and loss over a dataset: :class:`Meter` and :func:`evaluate`.

Training reports its validation error with the same :func:`evaluate` that ``alexnet eval``
uses, so the two numbers can be compared directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.runtime import autocast

# Sums a float64 tensor in place over all processes (``alexnet.training.distributed``).
ReduceSum = Callable[[torch.Tensor], None]


@dataclass
class Meter:
    """Sums over samples: loss, top-1 and top-5 hits. Device tensors, so no sync per step."""

    loss_sum: torch.Tensor
    top1: torch.Tensor
    top5: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> Meter:
        z = torch.zeros((), dtype=torch.float64, device=device)
        return cls(z.clone(), z.clone(), z.clone(), 0)

    @classmethod
    def from_dict(cls, d: dict[str, float], device: torch.device) -> Meter:
        t = lambda v: torch.tensor(v, dtype=torch.float64, device=device)
        return cls(t(d["loss_sum"]), t(d["top1"]), t(d["top5"]), int(d["count"]))

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch (``loss`` is the batch mean)."""
        n = labels.shape[0]
        self.loss_sum += loss.detach().double() * n
        k = min(5, logits.shape[1])
        hits = logits.detach().topk(k, dim=1).indices == labels[:, None]
        self.top1 += hits[:, 0].sum()
        self.top5 += hits.any(dim=1).sum()
        self.count += n

    def as_dict(self) -> dict[str, float]:
        """Plain floats (syncs with the device)."""
        return {"loss_sum": self.loss_sum.item(), "top1": self.top1.item(), "top5": self.top5.item(), "count": self.count}

    def reduced(self, reduce_sum: ReduceSum | None) -> Meter:
        """A copy summed over all processes by ``reduce_sum`` (itself when it is None)."""
        if reduce_sum is None:
            return self
        count = torch.tensor(float(self.count), dtype=torch.float64, device=self.loss_sum.device)
        t = torch.stack([self.loss_sum, self.top1, self.top5, count])
        reduce_sum(t)
        return Meter(t[0], t[1], t[2], int(t[3].item()))

    def summary(self) -> dict[str, float]:
        """Mean loss and top-1/top-5 error rates (NaN when nothing was counted)."""
        n = self.count
        if n == 0:  # no samples: there is no error rate, and 100% / loss 0 would be a lie
            return {"loss": float("nan"), "top1_err": float("nan"), "top5_err": float("nan")}
        return {
            "loss": self.loss_sum.item() / n,
            "top1_err": 1.0 - self.top1.item() / n,
            "top5_err": 1.0 - self.top5.item() / n,
        }

    def is_finite(self) -> bool:
        """False once any accumulated loss was NaN or infinite."""
        return bool(torch.isfinite(self.loss_sum))


@torch.inference_mode()
def evaluate(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    transform: Callable[[torch.Tensor], torch.Tensor],
    precision: str,
    device: torch.device,
    crops: int = 1,
    per_class: torch.Tensor | None = None,
) -> Meter:
    """Loss and top-1/top-5 hits over ``batches`` (uint8 images, labels).

    ``transform`` turns N images into ``crops * N`` crop-major patches. One model and one crop:
    its logits. Otherwise softmax outputs are averaged over the crops (section 4.1, "averaging
    the predictions made by the network's softmax layer on the ten patches") and then over the
    models (section 6, "averaging the predictions of five similar CNNs"); the loss is then the
    negative log of the averaged probability of the true class.

    ``per_class`` (int64 ``num_classes x 3`` on ``device``), when given, accumulates for each true
    class the number of images, top-1 hits and top-5 hits.
    """
    for m in models:
        m.eval()
    meter = Meter.zeros(device)
    for images, labels in batches:
        if len(labels) == 0:  # a rank's share of a last global batch smaller than the world size
            continue
        labels = labels.to(device, non_blocking=True)
        x = transform(images)
        with autocast(device, precision):
            outputs = [m(x).float() for m in models]
        if len(outputs) == 1 and crops == 1:
            scores, loss = outputs[0], F.cross_entropy(outputs[0], labels)
        else:
            probs = torch.stack([o.softmax(dim=1).view(crops, len(labels), -1).mean(dim=0) for o in outputs]).mean(dim=0)
            scores, loss = probs, F.nll_loss(probs.clamp_min(1e-12).log(), labels)
        meter.update(loss, scores, labels)
        if per_class is not None:
            hits = scores.topk(min(5, scores.shape[1]), dim=1).indices == labels[:, None]
            rows = torch.stack([torch.ones_like(labels), hits[:, 0].long(), hits.any(dim=1).long()], dim=1)
            per_class.index_add_(0, labels, rows)
    return meter
