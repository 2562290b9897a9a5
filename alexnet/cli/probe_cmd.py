"""``alexnet probe``: how linearly separable each layer is (Alain & Bengio 2016). The project's
linear SVM is fitted on each layer's pooled activations of a sample of training images and
scored on the validation split, beside HOG + linear SVM and raw pixels + linear SVM on the same
images. Writes RUN/probe/probe.json, which ``alexnet report`` draws."""

from __future__ import annotations

import argparse
import json

from alexnet.cli.common import add_runtime_options, non_negative_int, positive_int, show_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="linear SVM accuracy of each layer beside HOG and pixels", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder (from alexnet train, demo or import)")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--layers", default="conv1,conv2,conv3,conv4,conv5,fc6,fc7", metavar="conv1,...,fc7",
                   help="comma-separated layers to probe (default conv1..fc7)")  # fmt: skip
    p.add_argument("--train-images", type=non_negative_int, default=10_000, metavar="N",
                   help="training images the probes are fitted on, a fixed random sample (default 10000; 0: all)")
    p.add_argument("--max-dims", type=positive_int, default=2048, metavar="D",
                   help="inputs per probe: conv maps and pixels are average-pooled to fit (default 2048)")
    p.add_argument("--max-iter", type=positive_int, default=100, metavar="N",
                   help="L-BFGS iterations of each linear SVM (default 100)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.baselines.probe import ProbeConfig, probe, save_probe
    from alexnet.errors import UserError
    from alexnet.evaluation.features import session_for
    from alexnet.inference import open_predictor
    from alexnet.runfolder import BASELINE, run_kind

    layers = tuple(name.strip() for name in args.layers.split(",") if name.strip())
    if not layers:
        raise UserError("--layers needs at least one layer, e.g. conv1,conv5,fc7")
    if run_kind(args.run) == BASELINE:
        raise UserError(f"{args.run} is a baseline run: a linear SVM on hand-made features has no layers to probe")
    predictor = open_predictor(args.run, args.device, args.precision)
    # Any classes: a probe fits its own classifier on the features (an ImageNet net on other data).
    session = session_for(predictor.require_network("probe"), args.data, predictor.precision, same_classes=False)
    cfg = ProbeConfig(layers=layers, train_images=args.train_images, max_dims=args.max_dims, max_iter=args.max_iter)
    log = (lambda _msg: None) if args.json else print
    result = probe(session, cfg, progress=show_progress(args), log=log)
    path = save_probe(args.run, session, result)
    if args.json:
        print(json.dumps(result.to_dict() | {"file": str(path)}, indent=1))
        return 0
    print(f"\nlinear SVM probes of {result.model} on {result.data}: fitted on {result.train_images:,} training images, "
          f"scored on {result.val_images:,} validation images")  # fmt: skip
    print(f"{'features':<8} {'what':<34} {'dims':>6} {'train acc':>10} {'test acc':>9} {'seconds':>8}")
    for r in result.rows:
        print(f"{r.name:<8} {r.shape:<34} {r.dims:>6} {r.train_acc:>10.2%} {r.test_acc:>9.2%} {r.seconds:>8.1f}")
    print(f"written to {path}")
    return 0
