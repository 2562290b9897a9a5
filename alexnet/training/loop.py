"""The pieces of one training step and one evaluation pass, as plain functions.

Kept small and flat (torchvision's ``references/classification`` style): the trainer strings
them together, and evaluation code elsewhere (``alexnet eval``) reuses :func:`evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.data.dataset import Dataset
from alexnet.data.presets import CropParams, Normalizer, centre_crop, crop_batch, draw_crop_params
from alexnet.data.seeding import generator
from alexnet.runtime import autocast
from alexnet.training.distributed import DistContext, all_reduce_sum_


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
        t = lambda v: torch.tensor(v, dtype=torch.float64, device=device)  # noqa: E731
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

    def reduced(self, ctx: DistContext) -> Meter:
        """A copy summed over all ranks (itself when there is one process)."""
        if not ctx.enabled:
            return self
        t = torch.stack([self.loss_sum, self.top1, self.top5, torch.tensor(float(self.count), dtype=torch.float64,
                                                                             device=self.loss_sum.device)])
        all_reduce_sum_(t, ctx)
        return Meter(t[0], t[1], t[2], int(t[3].item()))

    def summary(self) -> dict[str, float]:
        """Mean loss and top-1/top-5 error rates."""
        n = max(self.count, 1)
        return {
            "loss": self.loss_sum.item() / n,
            "top1_err": 1.0 - self.top1.item() / n,
            "top5_err": 1.0 - self.top5.item() / n,
        }

    def is_finite(self) -> bool:
        """False once any accumulated loss was NaN or infinite."""
        return bool(torch.isfinite(self.loss_sum))


class InputPipeline:
    """uint8 ``N,C,H,W`` batches -> normalised float batches on the device.

    Training batches get random crops and flips drawn for the *global* batch from a generator
    keyed by (seed, epoch, step); this process applies its own slice of them. So the numbers do
    not depend on how many processes share a batch, nor on whether the run was resumed.
    """

    def __init__(
        self,
        dataset: Dataset,
        device: torch.device,
        channels_last: bool,
        seed: int,
        stats: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        """``stats``: (mean, std) to normalise with; default the dataset's own (a checkpoint
        evaluated on other data passes the statistics it was trained with)."""
        self.augment, self.eval_crop = dataset.train_augment, dataset.eval_crop
        self.side = dataset.info.image_size
        mean, std = stats or (dataset.info.mean, dataset.info.std)
        self.normalize = Normalizer(tuple(mean), tuple(std))
        self.device, self.channels_last, self.seed = device, channels_last, seed

    def crop_params(self, epoch: int, step: int, global_batch: int) -> CropParams:
        """Crop/flip parameters of one global training batch."""
        return draw_crop_params(self.augment, self.side, global_batch, generator("augment", self.seed, epoch, step))

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def train(self, images: torch.Tensor, params: CropParams) -> torch.Tensor:
        """Random-crop, flip and normalise one batch (``params`` already sliced to it)."""
        images = images.to(self.device, non_blocking=True)
        return self._finish(crop_batch(images, params, self.augment.crop, self.augment.pad))

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """Centre-crop and normalise one batch."""
        images = images.to(self.device, non_blocking=True)
        return self._finish(centre_crop(images, self.eval_crop))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    precision: str,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and one optimiser step; returns (mean loss, logits), not synced."""
    with autocast(images.device, precision):
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


@torch.inference_mode()
def evaluate(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    transform: Callable[[torch.Tensor], torch.Tensor],
    precision: str,
    device: torch.device,
) -> Meter:
    """Loss and top-1/top-5 hits over ``batches`` (uint8 images, labels).

    One model: its logits. Several: an ensemble whose softmax outputs are averaged (paper
    section 6, "averaging the predictions of five similar CNNs"); the loss is then the negative
    log of the averaged probability of the true class.
    """
    for m in models:
        m.eval()
    meter = Meter.zeros(device)
    for images, labels in batches:
        labels = labels.to(device, non_blocking=True)
        x = transform(images)
        with autocast(device, precision):
            outputs = [m(x).float() for m in models]
        if len(outputs) == 1:
            scores, loss = outputs[0], F.cross_entropy(outputs[0], labels)
        else:
            probs = torch.stack([o.softmax(dim=1) for o in outputs]).mean(dim=0)
            scores, loss = probs, F.nll_loss(probs.clamp_min(1e-12).log(), labels)
        meter.update(loss, scores, labels)
    return meter
