"""``alexnet bench prepare``: images/s of ``alexnet prepare`` beside a plain PIL loop.

Both run in the same process, on the same generated folder of photo-like JPEGs of about
500x375 (the typical ImageNet size): smooth colour fields, edges and grain, saved at quality
90. The baseline is what one writes first: one process, for each file ``Image.open``,
``convert("RGB")``, resize the short side to SIZE (bicubic, antialiased), centre crop,
``save`` as JPEG quality 90. Ours is the full ``prepare``: listing, parallel conversion,
shard writing, exact statistics, index and manifest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from alexnet.cli.common import positive_int
from alexnet.data.prepare import Settings, default_workers, prepare
from alexnet.runtime import cpu_name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="images/s of `alexnet prepare` vs a plain PIL loop", description=__doc__)
    p.add_argument("--images", type=positive_int, default=400, help="number of generated JPEGs (default 400)")
    p.add_argument("--size", type=positive_int, default=256, help="output side (default 256)")
    p.add_argument("--workers", type=positive_int, default=None, help="prepare's processes (default: all cores)")
    p.add_argument(
        "--repeat", type=positive_int, default=2, help="timed runs of each; the best is reported (default 2)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


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



def run(args: argparse.Namespace) -> int:
    workers = args.workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="alexnet-bench-prepare-"))
    try:
        t = time.perf_counter()
        files = make_source(tmp / "src", args.images)
        gen_s = time.perf_counter() - t
        mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        base_best = ours_best = float("inf")
        for r in range(args.repeat):
            out = tmp / f"base{r}"
            t = time.perf_counter()
            baseline(files, out, args.size)
            base_best = min(base_best, time.perf_counter() - t)
            shutil.rmtree(out)
            out = tmp / f"ours{r}"
            t = time.perf_counter()
            prepare(
                tmp / "src", out, layout="folder", settings=Settings(size=args.size), workers=workers, progress=False
            )
            ours_best = min(ours_best, time.perf_counter() - t)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {
        "benchmark": "prepare",
        "images": args.images,
        "input": f"photo-like JPEG ~500x375, quality 90, mean {mean_kb:.0f} KiB",
        "size": args.size,
        "ours_images_per_s": args.images / ours_best,
        "ours_workers": workers,
        "baseline_images_per_s": args.images / base_best,
        "baseline": "single-process PIL open/convert/resize/crop/save loop",
        "speedup": base_best / ours_best,
        "cpu": cpu_name(),
        "cores": default_workers(),
        "generate_s": gen_s,
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(f"prepare ({workers} workers): {row['ours_images_per_s']:.1f} images/s   "
              f"plain PIL loop (1 process): {row['baseline_images_per_s']:.1f} images/s   "
              f"-> {row['speedup']:.2f}x")  # fmt: skip
        print(f"{args.images} {row['input']} -> {args.size}x{args.size} JPEG q90; {row['cpu']}, {row['cores']} cores")
    return 0
