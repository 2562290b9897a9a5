"""``alexnet import caffe DEPLOY.prototxt WEIGHTS.caffemodel [--mean MEAN] --out RUN``.

Reads Caffe's files without Caffe (its protobuf schema, the AlexNet subset) and writes an
ordinary run folder: ``eval``, ``predict``, ``export``, ``serve`` and ``--init-from`` use it.
BGR becomes RGB, the mean becomes the run's input normalisation, Caffe's LRN k = 1 is kept, and
CaffeNet's pool-then-LRN order (bvlc_reference_caffenet) is kept too.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import weights from another framework (Caffe)", description=__doc__)
    formats = p.add_subparsers(title="formats", metavar="FORMAT", parser_class=type(p))
    c = formats.add_parser("caffe", help="bvlc_alexnet / CaffeNet / a Caffe AlexNet", description=__doc__)
    c.add_argument("prototxt", metavar="DEPLOY.prototxt", help="the net definition (V2 `layer` or V1 `layers`)")
    c.add_argument("caffemodel", metavar="WEIGHTS.caffemodel", help="the trained weights")
    c.add_argument("--mean", help="mean file: .binaryproto or .npy, 3xSxS or 3 values, BGR as Caffe stores it")
    c.add_argument("--out", required=True, help="the run folder to write: new or empty (nothing else is overwritten)")
    c.add_argument("--force", action="store_true", help="replace an earlier import in --out (never a trained run or other files)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run(args: argparse.Namespace) -> int:
    from alexnet.interop.caffe import import_caffe

    result = import_caffe(args.prototxt, args.caffemodel, args.out, args.mean, force=args.force)
    if args.json:
        print(json.dumps(asdict(result)))
        return 0
    print(f"wrote {result.run}: alexnet with {result.num_classes} classes from a {result.format} Caffe net, "
          f"LRN k={result.lrn_k:g} {result.lrn_order}, conv1 BGR->RGB, mean: {result.mean}")  # fmt: skip
    if args.mean is None:
        print("note: no --mean given: the network sees raw 0-255 pixels (Caffe's models expect their mean subtracted)")
    return 0
