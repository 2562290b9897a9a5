"""The input pipeline: uint8 batches -> normalised (and, in training, augmented) float batches.

One home for how pixels reach the network: training (:mod:`alexnet.training`), evaluation and
prediction (:mod:`alexnet.evaluation`) and the benchmarks all go through
:class:`InputPipeline` with the :class:`InputNorm` stored in the checkpoint, so a model sees
at test time exactly the preprocessing it was trained with. The batch transforms themselves
(crops, flips, PCA colour noise) are in :mod:`alexnet.data.presets`; the input convention
record and the transform of single image files in :mod:`alexnet.data.convention`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from alexnet.data.convention import MAX_IMAGE_SIDE, InputNorm, input_convention_error
from alexnet.data.dataset import Dataset
from alexnet.data.presets import (
    EVAL_VIEWS,
    CropParams,
    Normalizer,
    centre_crop,
    crop_batch,
    crop_normalize_nhwc,
    draw_crop_params,
    is_nhwc,
    pca_colour_shift,
    ten_crops,
)
from alexnet.data.seeding import generator
from alexnet.errors import UserError

__all__ = ["MAX_IMAGE_SIDE", "InputNorm", "InputPipeline", "input_convention_error"]


class InputPipeline:
    """uint8 ``N,C,H,W`` batches -> normalised float batches on the device.

    Training batches get random crops and flips and (for RGB data, if asked) PCA colour noise,
    all drawn for the *global* batch from a generator keyed by (seed, epoch, step); this process
    applies its own slice. So the numbers do not depend on how many processes share a batch,
    nor on whether the run was resumed.
    """

    def __init__(
        self,
        dataset: Dataset,
        device: torch.device,
        channels_last: bool,
        seed: int,
        norm: InputNorm | None = None,
        normalize: str = "channel",
        pca: str = "off",
        pca_std: float = 0.1,
    ) -> None:
        """``norm``: the normalisation to use (default: computed from ``dataset`` as ``normalize``
        says, ``channel`` or ``mean-image``); ``pca``: colour noise mode (``paper``, ``std``, ``off``),
        alpha ~ N(0, ``pca_std``)."""
        self.augment, self.eval_crop = dataset.train_augment, dataset.eval_crop
        self.side = dataset.info.image_size
        needs_stats = (norm is None and normalize == "mean-image") or pca != "off"
        colour = dataset.colour_stats() if needs_stats else None
        if norm is None:
            mean_image = colour.mean_image if normalize == "mean-image" and colour is not None else None
            norm = InputNorm(dataset.info.mean, dataset.info.std, mean_image)
        self.norm = norm
        self.normalize = Normalizer(norm.mean, norm.std)
        self.mean_image = norm.mean_image.to(device) if norm.mean_image is not None else None
        self.colour = colour if pca != "off" and colour is not None and colour.eigvals is not None else None
        self.pca, self.pca_std = pca, pca_std
        self.device, self.channels_last, self.seed = device, channels_last, seed

    def crop_params(self, epoch: int, step: int, global_batch: int) -> CropParams:
        """Crop, flip and colour-noise parameters of one global training batch."""
        gen = generator("augment", self.seed, epoch, step)
        params = draw_crop_params(self.augment, self.side, global_batch, gen)
        if self.colour is not None:  # section 4.1: alpha_i ~ N(0, 0.1), one draw per image per use
            alphas = torch.randn(global_batch, 3, generator=gen) * self.pca_std
            params = dataclasses.replace(params, colour=pca_colour_shift(alphas, self.colour, self.pca))
        return params

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def train(self, images: torch.Tensor, params: CropParams) -> torch.Tensor:
        """Random-crop, flip, normalise and colour-shift one batch (``params`` sliced to it)."""
        if self._fast_cpu(images):
            return self._finish(self._fused(images, params.tops.tolist(), params.lefts.tolist(),
                                            params.flips.tolist(), self._shift(params)))  # fmt: skip
        images = images.to(self.device, non_blocking=True)
        x = self._crop_and_normalize(images, lambda t: crop_batch(t, params, self.augment.crop, self.augment.pad))
        shift = self._shift(params)
        if shift is not None:
            x = x + shift.to(self.device)[:, :, None, None]
        return self._finish(x)

    def _shift(self, params: CropParams) -> torch.Tensor | None:
        """The colour offsets of ``params`` in the units of the normalised input (``N, C``)."""
        if params.colour is None:
            return None
        shift = params.colour.to(torch.float32)
        if self.mean_image is None:  # the offsets are in pixel units
            shift = shift / self.normalize.std.view(1, -1)
        return shift

    def _fast_cpu(self, images: torch.Tensor) -> bool:
        """Whether the image-by-image CPU path applies: CPU training on channels_last uint8
        batches of real images (the prepared-data loader's output), no padding."""
        return (
            self.device.type == "cpu"
            and images.device.type == "cpu"
            and images.dtype == torch.uint8
            and self.augment.pad == 0
            and images.shape[-1] >= 64
            and is_nhwc(images)
        )

    def _fused(self, images: torch.Tensor, tops: list[int], lefts: list[int], flips: list[bool],
               shift: torch.Tensor | None, size: int | None = None) -> torch.Tensor:  # fmt: skip
        mean_image = self.mean_image.cpu() if self.mean_image is not None else None
        return crop_normalize_nhwc(images, tops, lefts, flips, size or self.augment.crop, mean_image=mean_image,
                                   mean=self.norm.mean, std=self.norm.std, shift=shift)  # fmt: skip

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """Centre-crop and normalise one batch."""
        if self._fast_cpu(images):
            n, (h, w) = images.shape[0], images.shape[-2:]
            top, left = (h - self.eval_crop) // 2, (w - self.eval_crop) // 2
            return self._finish(self._fused(images, [top] * n, [left] * n, [False] * n, None, self.eval_crop))
        images = images.to(self.device, non_blocking=True)
        return self._finish(self._crop_and_normalize(images, lambda t: centre_crop(t, self.eval_crop)))

    def eval_flip(self, images: torch.Tensor) -> torch.Tensor:
        """The centre crop of every image, then its mirror (crop-major: 2N patches), normalised.

        The reflection half of section 4.1's test protocol, for images no larger than the crop
        (28 px Fashion-MNIST), where the ten patches would be five copies of one.
        """
        x = self.eval(images)
        return torch.cat([x, x.flip(-1)])

    def eval_views(self, views: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
        """The transform of ``views`` (one of :data:`EVAL_VIEWS`) and its patches per image."""
        if views not in EVAL_VIEWS:
            raise UserError(f"unknown test views {views!r}; choose one of {', '.join(EVAL_VIEWS)}")
        transform = {"centre": self.eval, "flip": self.eval_flip, "ten-crop": self.eval_ten_crop}[views]
        return transform, EVAL_VIEWS[views]

    def eval_ten_crop(self, images: torch.Tensor) -> torch.Tensor:
        """The ten test patches of every image (crop-major, see :func:`ten_crops`), normalised."""
        images = images.to(self.device, non_blocking=True)
        return self._finish(self._crop_and_normalize(images, lambda t: ten_crops(t, self.eval_crop)))

    def _crop_and_normalize(self, images: torch.Tensor, crop: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        x = crop(images)
        if self.mean_image is None:
            return self.normalize(x)
        return x.float() - crop(self.mean_image.expand(images.shape[0], -1, -1, -1))
