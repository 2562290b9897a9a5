"""``alexnet predict``: the most likely classes of image files (or folders of them, or ``-`` for
image bytes on standard input) under any model: a run folder, a checkpoint, an imported Caffe
run, a torchvision AlexNet state_dict, an exported ``.onnx`` or a baseline run. URLs are not fetched."""

from __future__ import annotations

import argparse
import json
import sys

from alexnet.cli import EXIT_USAGE
from alexnet.cli.common import add_runtime_options, positive_int
from alexnet.inference import open_predictor


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files", description=__doc__)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="run folder (trained, imported or baseline), checkpoint, torchvision AlexNet state_dict, or an exported .onnx")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads), folders of them, or - (standard input)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = open_predictor(args.checkpoint, args.device, args.precision).predict(args.images, args.topk)
    failed = [r for r in results if "error" in r]  # each unreadable image is named; the others are answered
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                print(f"alexnet: error: {r['error']}", file=sys.stderr)
                continue
            print(r["image"])
            for pred in r["predictions"]:
                print(f"  {pred['probability']:7.2%}  {pred['class']}")
    return EXIT_USAGE if failed else 0
