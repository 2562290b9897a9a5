"""Our batched HOG against scikit-image's, image by image (the direct reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet.baselines.hog import HogParams, hog

skimage_feature = pytest.importorskip("skimage.feature")


def _reference(images: torch.Tensor, p: HogParams) -> np.ndarray:
    kw = {"orientations": p.orientations, "pixels_per_cell": (p.cell, p.cell), "cells_per_block": (p.block, p.block),
          "block_norm": "L2-Hys"}  # fmt: skip
    if images.shape[1] == 1:
        return np.stack([skimage_feature.hog(im[0].numpy(), **kw) for im in images])
    return np.stack([skimage_feature.hog(im.permute(1, 2, 0).numpy(), channel_axis=-1, **kw) for im in images])


def _photo_like(n: int, channels: int, h: int, w: int) -> torch.Tensor:
    """Smooth shapes plus noise and flat regions: axis-aligned (0 and 90 degree) gradients,
    which sit on bin edges, as well as every other orientation."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = torch.zeros(n, channels, h, w)
    for i in range(n):
        cy, cx, r = torch.randint(4, h - 4, (1,), generator=g), torch.randint(4, w - 4, (1,), generator=g), 3 + i % 7
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).float() * 180
        box = ((yy > h // 3) & (xx < w // 2)).float() * 60
        out[i] = disc + box + torch.rand(channels, h, w, generator=g) * (40 if i % 2 else 0)
    return out.clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize(
    ("channels", "size", "params"),
    [
        (1, (28, 28), HogParams(9, 4, 2)),  # the hog baseline's fine scale on Fashion-MNIST
        (1, (28, 28), HogParams(9, 7, 2)),  # its coarse scale (odd cell size)
        (1, (30, 33), HogParams(8, 5, 3)),  # not square, cells not dividing the image
        (3, (32, 32), HogParams(9, 8, 2)),  # colour: the strongest channel at each pixel
        (3, (24, 40), HogParams(6, 3, 1)),
    ],
)
def test_hog_equals_skimage(channels: int, size: tuple[int, int], params: HogParams) -> None:
    images = _photo_like(12, channels, *size)
    ours = hog(images, params)
    ref = _reference(images, params)
    assert ours.shape == (12, params.dim(*size)) == ref.shape
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)
    assert ref.max() > 0.05  # the images have structure: the comparison is not of zeros


def test_hog_on_random_noise_equals_skimage() -> None:
    images = torch.randint(0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    np.testing.assert_allclose(hog(images, HogParams(9, 4, 2)).numpy(), _reference(images, HogParams(9, 4, 2)), atol=1e-5)


def test_hog_batch_is_per_image() -> None:
    images = _photo_like(6, 1, 28, 28)
    whole = hog(images, HogParams(9, 4, 2))
    one_by_one = torch.cat([hog(images[i : i + 1], HogParams(9, 4, 2)) for i in range(6)])
    torch.testing.assert_close(whole, one_by_one)


def test_hog_rejects_too_small_images() -> None:
    with pytest.raises(ValueError, match="too small"):
        hog(torch.zeros(2, 1, 7, 7, dtype=torch.uint8), HogParams(9, 4, 2))


# The exact uint8 path (tables indexed by the integer gradient pair) against the float path and
# against scikit-image's own formulas.


def test_bin_tables_equal_skimage_binning_on_every_integer_gradient() -> None:
    from alexnet.baselines.hog import _bin_table, _code_pairs, _magnitude_table

    g_row, g_col = (g.numpy() for g in _code_pairs())
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180  # scikit-image's float64 orientation
    for orientations in (9, 8, 6, 4):
        # its Cython: bin i holds angles in [float32(180 / n * i), float32(180 / n * (i + 1)))
        edges = np.array([180.0 / orientations * i for i in range(orientations + 1)], dtype=np.float32).astype(np.float64)
        expected = ((angle[:, None] >= edges[None, :-1]) & (angle[:, None] < edges[None, 1:])).argmax(1)
        np.testing.assert_array_equal(_bin_table(orientations).numpy(), expected)
    np.testing.assert_allclose(_magnitude_table().numpy(), np.hypot(g_row, g_col), rtol=1e-7)


@pytest.mark.parametrize(("channels", "params"), [(1, HogParams(9, 4, 2)), (1, HogParams(9, 7, 2)), (3, HogParams(9, 8, 2))])
def test_uint8_tables_equal_the_float_path(channels: int, params: HogParams) -> None:
    images = torch.randint(0, 256, (6, channels, 32, 32), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    images[:3] = _photo_like(3, channels, 32, 32)
    exact = hog(images, params)
    torch.testing.assert_close(exact, hog(images.float(), params), rtol=0, atol=0)  # bit for bit
    np.testing.assert_allclose(exact.numpy(), _reference(images, params), rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_float_images_equal_skimage(channels: int) -> None:
    images = _photo_like(4, channels, 28, 28).float() / 255  # float32: scikit-image computes in float32 too
    np.testing.assert_allclose(hog(images, HogParams(9, 7, 2)).numpy(), _reference(images, HogParams(9, 7, 2)), atol=1e-5)


def test_colour_tie_keeps_the_channel_skimage_keeps() -> None:
    """28^2 + 47^2 = 17^2 + 52^2, but numpy's float64 hypot of (17, 52) is one ulp larger: scikit-image
    keeps channel 1 there (an orientation bin apart), not the first of two equal magnitudes."""
    from alexnet.baselines.hog import gradients

    assert np.hypot(17.0, 52.0) > np.hypot(28.0, 47.0)
    images = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    for ch, (g_row, g_col) in enumerate([(28, 47), (17, 52)]):
        images[0, ch, 6, 5], images[0, ch, 5, 6] = 100 + g_row, 100 + g_col  # pixel (5, 5): (g_row, g_col)
    g_row, g_col = gradients(images)
    assert (g_row[0, 5, 5].item(), g_col[0, 5, 5].item()) == (17, 52)
    np.testing.assert_allclose(hog(images, HogParams(9, 4, 2)).numpy(), _reference(images, HogParams(9, 4, 2)), atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_chunks_equal_one_batch(channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks, in turn at one torch thread, in parallel threads at two: the same bytes."""
    from alexnet.baselines import hog as hog_module

    images = _photo_like(10, channels, 28, 28)
    whole = hog(images, HogParams(9, 4, 2))
    monkeypatch.setattr(hog_module, "CHUNK_PIXELS", 4 * channels * 28 * 28)  # chunks of 4, 4 and 2 images
    torch.testing.assert_close(hog(images, HogParams(9, 4, 2)), whole, rtol=0, atol=0)
    torch.testing.assert_close(hog(images, HogParams(9, 4, 2), hog_module.gradients(images)), whole, rtol=0, atol=0)
    threads = torch.get_num_threads()
    for t in (1, 2):
        torch.set_num_threads(t)
        try:
            torch.testing.assert_close(hog(images, HogParams(9, 4, 2)), whole, rtol=0, atol=0)
            assert torch.get_num_threads() == t  # the pool gave the setting back
            assert hog(images[:0], HogParams(9, 4, 2)).shape == (0, whole.shape[1])
        finally:
            torch.set_num_threads(threads)
