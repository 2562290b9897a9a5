#!/usr/bin/env python3
"""Write a small class folder of rendered digit images (0-9), for fine-tuning checks.

    python scripts/render-digits.py OUT [--per-class 40] [--size 32] [--seed 0] [--colour]

Each image is one digit drawn with PIL in one of the system's TrueType fonts (DejaVu,
Liberation), at a random size, position, stroke grey level and small rotation, on a noisy
background; ``--colour`` draws coloured digits on coloured backgrounds (an RGB source).
The tree is ``OUT/<digit>/<n>.png``: a single class-folder tree, so ``alexnet prepare OUT
PREPARED --size 32`` holds out 10% of each class as val. Deterministic for a given seed and
font set. Used for the fine-tuning table in docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_GLOBS = ("/usr/share/fonts/truetype/dejavu/*.ttf", "/usr/share/fonts/truetype/liberation/*.ttf")


def fonts() -> list[str]:
    found = sorted(p for pattern in FONT_GLOBS for p in glob.glob(pattern))
    if not found:
        raise SystemExit("no TrueType fonts under /usr/share/fonts/truetype (apt-get install fonts-dejavu-core)")
    return found


def render(digit: int, font_path: str, size: int, rng: np.random.Generator, colour: bool) -> np.ndarray:
    big = size * 4  # draw large, then downscale (antialiased strokes)
    if colour:
        bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        while np.abs(bg.astype(int) - fg.astype(int)).sum() < 200:  # keep the digit visible
            fg = rng.integers(0, 256, 3)
        paper: tuple[int, ...] | int = tuple(int(v) for v in bg)
        ink: tuple[int, ...] | int = tuple(int(v) for v in fg)
    else:
        paper, ink = int(rng.integers(0, 60)), int(rng.integers(170, 256))
    img = Image.new("RGB" if colour else "L", (big, big), paper)
    font = ImageFont.truetype(font_path, int(big * rng.uniform(0.55, 0.85)))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    w, h = right - left, bottom - top
    x = (big - w) / 2 - left + rng.uniform(-0.12, 0.12) * big
    y = (big - h) / 2 - top + rng.uniform(-0.12, 0.12) * big
    draw.text((x, y), str(digit), fill=ink, font=font)
    img = img.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, fillcolor=paper)
    small = np.asarray(img.resize((size, size), Image.Resampling.LANCZOS)).astype(np.float32)
    small += rng.normal(0, 12, small.shape)  # sensor-like noise
    return np.clip(small, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    paths = fonts()
    for digit in range(10):
        folder = Path(args.out) / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(args.per_class):
            pixels = render(digit, paths[int(rng.integers(len(paths)))], args.size, rng, args.colour)
            Image.fromarray(pixels).save(folder / f"{n:04d}.png")
    print(f"wrote {10 * args.per_class} images ({len(paths)} fonts) to {args.out}")


if __name__ == "__main__":
    main()
