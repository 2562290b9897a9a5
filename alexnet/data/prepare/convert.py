"""One input image -> ``size x size`` RGB pixels -> encoded bytes (paper section 2).

Steps: decode; convert to RGB; rescale so the short side is ``size`` (antialiased bicubic);
take the central ``size x size`` window; encode (JPEG, quality 90 by default, or raw pixels).

Decisions, and why:

* Any format Pillow reads is accepted, whatever the file's extension: ImageNet's training set
  holds a PNG named ``.JPEG``.
* CMYK JPEGs (22 in ImageNet) are read with Adobe's inverted polarity, which Pillow assumes and
  Photoshop writes, and converted with ``(255 - C)(255 - K) / 255``; ICC profiles are ignored,
  as by torchvision, Caffe and OpenCV.
* Grayscale (8- and 16-bit) is replicated to three channels; 16-bit values are scaled to 8 bits.
  With ``channels=1`` (``alexnet prepare --channels 1``) the RGB result becomes grey by
  ITU-R 601 luma (Pillow's ``L``), as :func:`model_pixels` gives one-channel models in ``predict``.
* Palette, grey+alpha and RGBA images are composited on **white** (transparent areas of
  product photos and icons are meant to be seen on a white page); the result is RGB.
* EXIF orientation is **ignored**: the labels, boxes and every reference pipeline
  (torchvision's ImageFolder, Caffe, the ILSVRC tools) use the stored pixel orientation.
* Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale with ``draft`` (libjpeg's DCT scaling) but
  never below twice the target side, and then resized with the antialiasing filter; the result
  differs from a full decode by less than JPEG noise (a test checks the PSNR) and is 2-5x faster.
* The crop is resampled directly from the source region it covers (``resize(box=...)``), which
  is the same sampling grid as "rescale, then crop" without computing the discarded columns.
* A file that is truncated or cannot be decoded raises :class:`ConversionError` with a short
  reason; truncated data is never padded (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False).
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

RESAMPLE = Image.Resampling.BICUBIC
ENCODINGS = ("jpeg", "raw")
EXTENSIONS = {"jpeg": "jpg", "raw": "npy"}
BACKGROUND = (255, 255, 255)


class ConversionError(Exception):
    """An input that cannot become a training image; the message is the reason."""


def decode(data: bytes, size: int | None = None) -> tuple[Image.Image, tuple[int, int], float]:
    """Open and fully decode ``data``.

    With ``size``, a JPEG is decoded at a reduced scale (1/2, 1/4, 1/8) whose short side is still
    at least ``2 * size``. Returns the image, the full size and the scale that was applied.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated files would be padded silently")
    if not data:
        raise ConversionError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and metadata warnings; pixels are what matter
            img = Image.open(io.BytesIO(data))
            full, scale = img.size, 1.0
            if size and img.format == "JPEG":
                w, h = full
                short = min(w, h)
                if short >= 4 * size:  # a 1/2 (or smaller) decode still has >= 2 * size pixels
                    want = (-(-w * 2 * size // short), -(-h * 2 * size // short))  # ceil
                    drafted = img.draft(None, want)
                    if drafted is not None:
                        scale = drafted[1][2] / w  # the full image maps to (0, 0, w*scale, h*scale)
            img.load()
    except Image.DecompressionBombError as e:
        raise ConversionError(f"image too large ({e})") from None
    except UnidentifiedImageError:
        raise ConversionError("cannot decode: not an image file in a format Pillow reads") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = re.sub(r"\s*<[^>]* at 0x[0-9a-fA-F]+>", "", str(e))  # no addresses: reasons must be reproducible
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise ConversionError(f"truncated or damaged: {msg}") from None
        raise ConversionError(f"cannot decode ({msg or type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - a damaged file can fail a decoder plugin in odd ways (struct.error, ...)
        raise ConversionError(f"cannot decode ({type(e).__name__}: {e})") from None
    return img, full, scale


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of ``img`` (see the module docstring for each mode)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        if mode == "I" and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:
            eight = arr.astype(np.uint8)
        else:
            eight = ((np.clip(arr, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight, "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(np.clip(np.asarray(img), 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ConversionError(f"unsupported colour mode {mode} ({e})") from None


def crop_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """Source rectangle that becomes the central ``size x size`` crop after rescaling the short
    side to ``size`` (output pixel grid of "rescale to round(w*s) x round(h*s), crop centre")."""
    scale = size / min(width, height)
    new_w, new_h = round(width * scale), round(height * scale)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return (left / scale, top / scale, (left + size) / scale, (top + size) / scale)


def resize_crop(img: Image.Image, size: int, full: tuple[int, int] | None = None, scale: float = 1.0) -> Image.Image:
    """Rescale (short side ``size``) and centre-crop ``img``.

    ``full`` and ``scale`` describe a drafted JPEG (its full size, and drafted pixels per full
    pixel), so the crop covers the same region of the picture with or without drafting.
    """
    full = full or img.size
    box = [v * scale for v in crop_box(full[0], full[1], size)]
    box[2], box[3] = min(box[2], img.size[0]), min(box[3], img.size[1])
    return img.resize((size, size), RESAMPLE, box=tuple(box))


def to_pixels(source: bytes | np.ndarray, size: int, draft: bool = True) -> np.ndarray:
    """``size x size x 3`` uint8 RGB pixels of an encoded image or an ``H,W[,3]`` uint8 array."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ConversionError(f"array of {source.dtype} {source.shape} is no image")
        img, full, scale = Image.fromarray(source).convert("RGB"), None, 1.0
    else:
        img, full, scale = decode(source, size if draft else None)
        img = to_rgb(img)
    if img.size == (size, size):
        return np.asarray(img, dtype=np.uint8)
    return np.asarray(resize_crop(img, size, full, scale), dtype=np.uint8)


def model_pixels(source: bytes | np.ndarray, channels: int, size: int) -> np.ndarray:
    """``size x size x channels`` uint8 pixels of an encoded image as a model sees them: the
    stored image :func:`to_pixels` makes for ``alexnet prepare`` (same decode, same alpha on
    white, same rescale and centre square), grey (ITU-R 601 luma, Pillow's ``L``) for
    one-channel models. ``predict`` calls this, so it sees the pixels training saw (and then
    takes the evaluation crop like evaluation does). Raises :class:`ConversionError`.
    """
    pixels = to_pixels(source, size)
    if channels == 1:
        return np.asarray(Image.fromarray(pixels, "RGB").convert("L"))[:, :, None]
    return pixels


def encode(pixels: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """Encode ``H,W,3`` (RGB) or ``H,W,1`` (grey) uint8 pixels as JPEG or as a ``.npy`` array (``raw``)."""
    if encoding == "jpeg":
        buf = io.BytesIO()
        grey = pixels.shape[2] == 1
        Image.fromarray(pixels[:, :, 0] if grey else pixels, "L" if grey else "RGB").save(buf, "JPEG", quality=quality)
        return buf.getvalue()
    if encoding == "raw":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(pixels), allow_pickle=False)
        return buf.getvalue()
    raise ValueError(f"unknown encoding {encoding!r}")


def convert(
    source: bytes | np.ndarray, size: int, encoding: str = "jpeg", quality: int = 90, channels: int = 3
) -> tuple[bytes, np.ndarray]:
    """Encoded bytes and pixels (``size x size x channels``: RGB, or grey as :func:`model_pixels`
    makes it) of one prepared image; raises :class:`ConversionError`."""
    pixels = model_pixels(source, channels, size)
    return encode(pixels, encoding, quality), pixels
