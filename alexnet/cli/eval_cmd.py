"""``alexnet eval``: top-1 and top-5 error of a checkpoint (or a softmax-averaged ensemble)."""

from __future__ import annotations

import argparse
import json

from alexnet import baselines
from alexnet.cli.common import add_runtime_options, positive_int
from alexnet.errors import UserError
from alexnet.evaluation import evaluate_checkpoints
from alexnet.inference import open_predictor
from alexnet.runfolder import BASELINE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 error of checkpoints on a dataset", description=__doc__)
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint file(s) or run folder(s); several = ensemble")
    p.add_argument("--data", help="data source (default: the one the first checkpoint was trained on)")
    p.add_argument("--split", default="val", choices=("train", "val"), help="split to evaluate (default val)")
    views = p.add_mutually_exclusive_group()
    views.add_argument("--ten-crop", action="store_true", help="average the softmax over 4 corners + centre and mirrors (section 4.1)")
    views.add_argument("--flip", action="store_true", help="average the softmax over the centre crop and its mirror")
    p.add_argument("--per-class", metavar="FILE",
                   help="also write per-class top-1/top-5 accuracy to FILE (CSV, or JSON if FILE ends in .json)")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--workers", type=int, default=None,
                   help="JPEG decoding threads for prepared datasets (default: cores, at most 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    predictors = [open_predictor(p, args.device, args.precision) for p in args.checkpoints]
    if any(p.kind == BASELINE for p in predictors):  # a 2011 baseline: SVM scores, one view
        if len(args.checkpoints) > 1:
            raise UserError("a baseline run is evaluated on its own, not in an ensemble")
        if args.ten_crop or args.flip:  # its features are of the centre crop; saying nothing would mislead
            raise UserError(f"{args.checkpoints[0]} is a baseline run: it is evaluated on the centre crop only; drop "
                            f"{'--ten-crop' if args.ten_crop else '--flip'}")  # fmt: skip
        result = baselines.evaluate_baseline(args.checkpoints[0], args.data, args.split, args.batch_size)
    else:
        result = evaluate_checkpoints(
            [p.require_network("eval") for p in predictors], args.data, args.split, args.batch_size, args.device, args.precision,
            "ten-crop" if args.ten_crop else "flip" if args.flip else "centre",
            per_class_file=args.per_class, workers=args.workers,
        )  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    tag = "  (SYNTHETIC data)" if result["synthetic"] else ""
    models = ", ".join(result["models"])
    if result.get("input_size"):
        print(result["input_size"])
    print(f"{result['data']} [{result['split']}], {result['n']:,} images, {result['crops']} crop(s), models: {models}{tag}")
    print(f"top-1 error {result['top1_err']:.2%}   top-5 error {result['top5_err']:.2%}   loss {result['loss']:.4f}")
    if result.get("per_class_file"):
        print(f"per-class accuracy written to {result['per_class_file']}")
    return 0
