"""Image conversion of `alexnet prepare`: colour modes, truncation, draft quality, geometry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from alexnet.data.prepare.convert import ConversionError, convert, crop_box, encode, to_pixels
from alexnet.data.prepare.items import check_key, member_name, stem
from tests.helpers import layouts as fx


def png(img: Image.Image) -> bytes:
    return fx.encode(img, "PNG")


def test_cmyk_jpeg_is_not_inverted() -> None:
    colour = Image.new("RGB", (40, 30), (200, 40, 90))
    data = fx.encode(colour.convert("CMYK"))
    out = to_pixels(data, 16)
    assert np.abs(out.astype(int) - [200, 40, 90]).max() <= 4


def test_grayscale_8_and_16_bit() -> None:
    gray = Image.new("L", (40, 30), 77)
    assert (to_pixels(fx.encode(gray), 16) == 77).all()
    deep = Image.fromarray(np.full((30, 40), 40000, np.uint16))
    assert deep.mode.startswith("I;16")
    assert (to_pixels(png(deep), 16) == round(40000 * 255 / 65535)).all()


def test_palette_and_alpha_are_composited_on_white() -> None:
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 40, 15))  # opaque blue top half
    out = to_pixels(png(rgba), 30)
    assert (out[2, 15] == [0, 0, 255]).all() and (out[27, 15] == [255, 255, 255]).all()
    pal = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert to_pixels(png(pal), 30)[2, 15].tolist() == [0, 0, 255]
    la = Image.new("LA", (40, 30), (10, 0))
    assert (to_pixels(png(la), 16) == 255).all()


def test_png_named_jpeg_and_any_extension() -> None:
    data = fx.png_named_jpeg(3)
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert to_pixels(data, 32).shape == (32, 32, 3)


@pytest.mark.parametrize("data, reason", [
    (fx.truncated_jpeg(1), "truncated"),
    (fx.jpeg(1)[:300], "truncated"),
    (b"", "empty"),
    (b"this is not an image", "cannot decode"),
])  # fmt: skip
def test_bad_files_raise_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ConversionError, match=reason):
        convert(data, 32)


def test_truncated_images_are_never_padded_silently() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
            convert(fx.jpeg(1), 32)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_draft_decoding_keeps_quality() -> None:
    """Big JPEGs decoded at reduced DCT scale (>= 2x the target) differ from a full decode by
    far less than JPEG noise."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize(
        (1600, 1200), Image.Resampling.BICUBIC
    )
    noisy = np.clip(np.asarray(coarse, float) + rng.normal(0, 4, (1200, 1600, 3)), 0, 255).astype(np.uint8)
    data = fx.encode(Image.fromarray(noisy), quality=92)
    for size in (64, 256):
        fast, full = to_pixels(data, size), to_pixels(data, size, draft=False)
        psnr = 10 * np.log10(255**2 / ((fast.astype(float) - full) ** 2).mean())
        assert psnr > 40, (size, psnr)


def test_geometry_short_side_then_centre_crop() -> None:
    # A wide image: a 1-pixel-wide vertical marker at the centre stays at the centre.
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 148:152] = 255
    out = to_pixels(png(Image.fromarray(arr)), 50)
    assert out.shape == (50, 50, 3)
    cols = out[..., 0].mean(0)
    assert abs(int(np.argmax(cols)) - 24.5) <= 1
    assert crop_box(300, 100, 50) == (100.0, 0.0, 200.0, 100.0)
    tall = to_pixels(png(Image.new("RGB", (20, 60), (9, 9, 9))), 40)  # upscaling works too
    assert tall.shape == (40, 40, 3) and (tall == 9).all()


def test_raw_and_jpeg_encodings() -> None:
    pixels = to_pixels(fx.jpeg(5), 32)
    raw = encode(pixels, "raw")
    assert np.array_equal(np.load(io.BytesIO(raw)), pixels)
    back = np.asarray(Image.open(io.BytesIO(encode(pixels, "jpeg", 95))))
    assert np.abs(back.astype(int) - pixels).mean() < 4


def test_keys_and_member_names() -> None:
    assert stem("n01440764/n01440764_10026.JPEG") == "n01440764_10026"
    assert stem("../../x.y.JPEG") == "x.y"
    assert check_key("cat/001") is None
    for bad in ("../x", "/etc/passwd", "a/../b", "a\nb", "", "a\\b"):
        assert check_key(bad), bad
    assert member_name("n01440764_10026") == "n01440764_10026"
    assert member_name("cat/img.001 x") == "cat/img%2E001%20x"  # no dots: WebDataset splits at the first


@pytest.mark.parametrize("maker", [fx.cmyk_jpeg, fx.gray_jpeg, fx.png_named_jpeg])
def test_fixture_files_are_what_they_claim(maker: object) -> None:
    data = maker(1)  # type: ignore[operator]
    img = Image.open(io.BytesIO(data))
    assert img.format == ("PNG" if maker is fx.png_named_jpeg else "JPEG")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(fx.truncated_jpeg(1))).load()
