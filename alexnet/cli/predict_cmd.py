"""``alexnet predict``: the most likely classes of image files (or a folder of them, or ``-`` for
image bytes on standard input) under a checkpoint. URLs are not fetched."""

from __future__ import annotations

import argparse
import json
import sys

from alexnet import baselines
from alexnet.cli import EXIT_USAGE
from alexnet.cli.common import add_runtime_options, positive_int
from alexnet.evaluation import predict


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files", description=__doc__)
    p.add_argument("checkpoint", metavar="CKPT", help="alexnet checkpoint or run folder, a torchvision AlexNet state_dict, or an exported .onnx")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads), folders of them, or - (standard input)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if baselines.is_baseline_run(args.checkpoint):  # a 2011 baseline: prob = softmax of SVM scores
        results = baselines.predict_baseline(args.checkpoint, args.images, args.topk)
    elif args.checkpoint.lower().endswith(".onnx"):  # an `alexnet export` file: onnxruntime, CPU, fp32
        from alexnet.interop.onnx_model import OnnxModel

        results = OnnxModel(args.checkpoint).predict(args.images, args.topk)
    else:
        results = predict(args.checkpoint, args.images, args.topk, args.device, args.precision)
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
                print(f"  {pred['prob']:7.2%}  {pred['class']}")
    return EXIT_USAGE if failed else 0
