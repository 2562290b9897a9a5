"""``predict`` sees the pixels training saw: prepare and predict both go through
:func:`~alexnet.data.prepare.convert.model_pixels` (an RGBA image is composited on white in
both), and the image arguments (files, folders, URLs) expand as users expect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data.convention import InputConvention, InputNorm
from alexnet.data.images import expand_images, load_image
from alexnet.data.prepare import Settings, prepare
from alexnet.data.prepare.convert import model_pixels
from alexnet.data.prepared import PreparedDataset
from alexnet.errors import UserError

SIZE = 32


def rgba_picture() -> Image.Image:
    """Half transparent, half opaque red: alpha matters for every pixel of the left half."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    pixels[:, :24, 3] = 0  # fully transparent: white after compositing, not the stored colour
    pixels[:, 24:] = (200, 10, 10, 255)
    return Image.fromarray(pixels, "RGBA")


def test_prepare_and_predict_decode_an_rgba_image_with_the_same_function(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        rgba_picture().save(src / c / "rgba.png")
    data = (src / "a" / "rgba.png").read_bytes()
    expected = model_pixels(data, 3, SIZE)
    assert (expected[:, : SIZE // 3] == 255).all()  # composited on white (dropping alpha would show noise)

    out = tmp_path / "out"
    prepare(src, out, settings=Settings(size=SIZE, encoding="raw"), workers=1, val_fraction=0.0, progress=False)
    ds = PreparedDataset(out)
    stored = ds.read("train", [0])[0][0].permute(1, 2, 0).numpy()  # what training reads
    np.testing.assert_array_equal(stored, expected)

    crop = 28
    seen = load_image(src / "a" / "rgba.png", InputConvention(3, SIZE, crop, InputNorm((0.0,) * 3, (1.0,) * 3)))  # what predict feeds the model
    top = (SIZE - crop) // 2
    assert torch.equal(seen, torch.from_numpy(expected[top : top + crop, top : top + crop].copy()).permute(2, 0, 1))
    grey = load_image(src / "a" / "rgba.png", InputConvention(1, SIZE, SIZE, InputNorm((0.0,), (1.0,))))  # one-channel models: the same pixels as luma
    assert grey.shape == (1, SIZE, SIZE) and (grey[0, :, : SIZE // 3] == 255).all()


def test_image_arguments_expand_like_users_expect(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("b.png", "a.JPG", "sub/c.bmp"):
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    folder = str(tmp_path / "imgs")
    assert expand_images([folder, "-"]) == [f"{folder}/a.JPG", f"{folder}/b.png", f"{folder}/sub/c.bmp", "-"]
    with pytest.raises(UserError, match="URLs are not fetched"):
        expand_images(["http://example.org/x.jpg"])
    with pytest.raises(UserError, match="only once"):
        expand_images(["-", "-"])
