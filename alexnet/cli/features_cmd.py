"""``alexnet features``: a layer's activations (default fc7, the paper's "last hidden layer")
for every image of a split, streamed to a ``.npy`` file (float32 N x D, written through a
memmap, so memory stays one batch) with the labels beside it (``<name>.labels.npy``)."""

from __future__ import annotations

import argparse
import json

from alexnet.cli.common import add_runtime_options, positive_int, show_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    from alexnet.evaluation.features import FEATURE_LAYER, LAYERS

    p = sub.add_parser("features", help="fc7 (or another layer's) activations of a split, to a .npy file", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder or checkpoint")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--split", default="train", choices=("train", "val"), help="split (default train)")
    p.add_argument("--layer", default=FEATURE_LAYER, choices=LAYERS, help=f"layer (default {FEATURE_LAYER}, after its ReLU; "
                   "the others: the layer's output before its activation)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="FILE.npy", help="features file; labels go to FILE.labels.npy")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.evaluation.features import extract_features, open_session

    session = open_session(args.run, args.data, args.device, args.precision)
    result = extract_features(session, args.split, args.out, args.layer, args.batch_size, progress=show_progress(args))
    if args.json:
        print(json.dumps(result))
        return 0
    n, d = result["shape"]
    print(f"{args.layer} of {n:,} {args.split} images ({d} values each) -> {result['features']} "
          f"(labels: {result['labels']}) in {result['seconds']:.1f} s")  # fmt: skip
    return 0
