"""``alexnet bench prepare``'s measurement: images/s of ``alexnet prepare`` beside a plain PIL
loop, on the same generated folder of photo-like JPEGs (:func:`make_source`, which
``alexnet bench data`` uses too; :func:`photo_like` makes ``bench serve``'s request image).

What is compared, and the printing: ``cli/bench_prepare_cmd.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from alexnet.data.prepare import Settings, default_workers, prepare
from alexnet.runtime import cpu_name


def photo_like(rng: np.random.Generator, width: int = 500, height: int = 375) -> Image.Image:
    """A synthetic picture with the statistics that matter for JPEG: smooth regions, edges, grain."""
    coarse = rng.random((4, 5, 3)) * 255
    img = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(img, dtype=np.float32)
    texture = Image.fromarray((rng.random((height // 4, width // 4)) * 255).astype(np.uint8))
    texture = texture.resize((width, height), Image.Resampling.BICUBIC)  # foliage/fabric-like detail
    pixels += (np.asarray(texture, np.float32)[..., None] - 128) * 0.25
    pixels += rng.normal(0, 10, pixels.shape).astype(np.float32)  # sensor grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_source(root: Path, count: int, classes: int = 10, seed: int = 0) -> list[Path]:
    """``root/train/class_k/img_n.jpg``: ``count`` photo-like JPEGs (quality 90)."""
    rng = np.random.default_rng(seed)
    files = []
    for n in range(count):
        folder = root / "train" / f"class_{n % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{n:05d}.jpg"
        w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
        photo_like(rng, w, h).save(path, "JPEG", quality=90)
        files.append(path)
    return files


def baseline(files: list[Path], out: Path, size: int) -> None:
    """The plain loop: open, RGB, resize short side, centre crop, save."""
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            img.crop((left, top, left + size, top + size)).save(out / f"{i:06d}.jpg", "JPEG", quality=90)


def benchmark(images: int, size: int, workers: int, repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` timed runs of the plain loop and of ``prepare`` (``workers`` processes)
    on ``images`` generated JPEGs to ``size`` px: the result row (what ``--json`` prints)."""
    tmp = Path(tempfile.mkdtemp(prefix="alexnet-bench-prepare-"))
    try:
        t = time.perf_counter()
        files = make_source(tmp / "src", images)
        gen_s = time.perf_counter() - t
        mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        base_best = ours_best = float("inf")
        for r in range(repeat):
            out = tmp / f"base{r}"
            t = time.perf_counter()
            baseline(files, out, size)
            base_best = min(base_best, time.perf_counter() - t)
            shutil.rmtree(out)
            out = tmp / f"ours{r}"
            t = time.perf_counter()
            prepare(
                tmp / "src", out, layout="folder", settings=Settings(size=size), workers=workers, progress=False
            )
            ours_best = min(ours_best, time.perf_counter() - t)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {
        "benchmark": "prepare",
        "images": images,
        "input": f"photo-like JPEG ~500x375, quality 90, mean {mean_kb:.0f} KiB",
        "size": size,
        "ours_images_per_s": images / ours_best,
        "ours_workers": workers,
        "baseline_images_per_s": images / base_best,
        "baseline": "single-process PIL open/convert/resize/crop/save loop",
        "speedup": base_best / ours_best,
        "cpu": cpu_name(),
        "cores": default_workers(),
        "generate_s": gen_s,
    }
    return row
