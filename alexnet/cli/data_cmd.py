"""``alexnet data ...``: inspect a dataset written by ``alexnet prepare``.

* ``alexnet data index OUT --split val``: one JSON line per stored sample, ``{"key", "label"}``,
  in index order (the key is the source file name without extension).
* ``alexnet data show OUT [--grid FILE.png]``: counts, classes, skipped files, statistics, and
  optionally a contact sheet of sample images with their class names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from alexnet.cli.common import positive_int
from alexnet.data.dataset import SPLITS
from alexnet.data.prepared import PreparedDataset
from alexnet.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect a prepared dataset (index, show)", description=__doc__)
    cmds = p.add_subparsers(title="subcommands", metavar="SUBCOMMAND", parser_class=type(p))
    idx = cmds.add_parser("index", help="JSON lines {key, label}, one per stored sample")
    idx.add_argument("root", metavar="OUT", help="prepared dataset folder")
    idx.add_argument("--split", choices=SPLITS, default="train", help="split (default train)")
    idx.set_defaults(func=run_index)
    show = cmds.add_parser("show", help="counts, classes, skipped files, statistics; --grid for a contact sheet")
    show.add_argument("root", metavar="OUT", help="prepared dataset folder")
    show.add_argument("--grid", metavar="FILE.png", help="also write a contact sheet of sample images")
    show.add_argument("--split", choices=SPLITS, default="train", help="split of the contact sheet (default train)")
    show.add_argument("--count", type=positive_int, default=64, help="images on the contact sheet (default 64)")
    show.add_argument("--all", action="store_true", help="list every class and every skipped file")
    show.add_argument("--json", action="store_true", help="print the manifest as JSON instead")
    show.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_index(args: argparse.Namespace) -> int:
    ds = PreparedDataset(args.root)
    labels = ds.labels(args.split).tolist()
    keys = ds.keys(args.split)
    if len(keys) != len(labels):
        raise UserError(f"{args.root}: the key list and the index of {args.split} differ; prepare the dataset again")
    out = sys.stdout
    for key, label in zip(keys, labels):
        out.write(json.dumps({"key": key, "label": label}, ensure_ascii=False) + "\n")
    return 0


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def run_show(args: argparse.Namespace) -> int:
    ds = PreparedDataset(args.root)
    m = ds.manifest
    if args.json:
        print(json.dumps(m, indent=1, ensure_ascii=False))
    else:
        quality = f" quality {m['quality']}" if m.get("quality") else ""
        print(f"{args.root}: {m['name']} from {m['source']['layout']} layout ({m['source']['path']})")
        colour = "RGB" if ds.channels == 3 else "grey"
        print(f"images {m['image_size']}x{m['image_size']} {colour}, {m['encoding']}{quality}, {m['shard_size']} per shard")
        for split in SPLITS:
            s = m["splits"][split]
            counts = f"{s['count']:,} images of {s['inputs']:,} input files ({len(s['skipped']):,} skipped)"
            print(f"{split}: {counts}, {len(s['shards'])} shards")
        classes = m["classes"]
        print(f"classes ({len(classes)}):")
        shown = classes if args.all or len(classes) <= 20 else classes[:10]
        for i, c in enumerate(shown):
            print(f"  {i:>4} {c['id']:<12} {c['name']}")
        if len(shown) < len(classes):
            print(f"  ... {len(classes) - len(shown)} more (--all lists them)")
        for split in SPLITS:
            skipped = m["splits"][split]["skipped"]
            if skipped:
                print(f"skipped in {split} ({len(skipped)}):")
                for s in skipped if args.all else skipped[:20]:
                    print(f"  {s['file']}: {s['reason']}")
                if not args.all and len(skipped) > 20:
                    print(f"  ... {len(skipped) - 20} more (--all lists them)")
        st = m.get("statistics")
        if st:
            print(f"statistics of train ({st['images']:,} images, {st['units']}):")
            print(f"  mean {_fmt(st['mean'])}  std {_fmt(st['std'])}")
            if "eigenvalues" in st:  # RGB only (grey datasets have no colour covariance to decompose)
                print(f"  RGB covariance eigenvalues {_fmt(st['eigenvalues'])}")
                vectors = np.array(st["eigenvectors"])
                for k in range(3):
                    print(f"  eigenvector {k}: {_fmt(vectors[:, k].tolist())}")
            print(f"  mean image: {st['mean_image']}")
        else:
            print("statistics: none (no training images)")
    if args.grid:
        n = write_grid(ds, args.split, args.grid, args.count)
        print(f"wrote {args.grid} ({n} {args.split} images)", file=sys.stderr if args.json else sys.stdout)
    return 0


def write_grid(ds: PreparedDataset, split: str, path: str, count: int = 64) -> int:
    """A contact sheet of up to ``count`` images spread evenly over ``split``, captioned with
    their class names; returns the number of images."""
    from PIL import Image, ImageDraw, ImageFont

    from alexnet.io import atomic_write

    if not str(path).lower().endswith(".png"):
        raise UserError(f"--grid needs a .png file name, got {path}")
    n = ds.num_samples(split)
    if n == 0:
        raise UserError(f"{ds.root}: the {split} split is empty; nothing to show")
    count = min(count, n)
    picks = np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))
    images, labels = ds.read(split, picks)
    tile = max(32, min(ds.size, 160))
    caption = 12
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = -(-len(picks) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * (tile + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (img, y) in enumerate(zip(images, labels.tolist())):
        r, c = divmod(i, cols)
        pixels = img.permute(1, 2, 0).numpy()
        pic = Image.fromarray(pixels[:, :, 0], "L") if pixels.shape[2] == 1 else Image.fromarray(pixels, "RGB")
        pic = pic.resize((tile, tile), Image.Resampling.BICUBIC)
        sheet.paste(pic, (c * tile, r * (tile + caption)))
        name = ds.info.classes[y]
        while name and draw.textlength(name, font=font) > tile - 2:
            name = name[:-1]
        draw.text((c * tile + 1, r * (tile + caption) + tile), name, fill=(0, 0, 0), font=font)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(path), lambda f: sheet.save(f, "PNG"))
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e}); choose another file") from None
    return len(picks)
