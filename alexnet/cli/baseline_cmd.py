"""``alexnet baseline``: fit a 2011-style hand-crafted pipeline (features -> linear SVM) into a run
folder that ``alexnet eval`` and ``alexnet predict`` accept like a network's.

Features: raw (pixels, the floor), hog (HOG at two cell sizes, Dalal & Triggs 2005), hog-rbf
(HOG + pixels through an explicit RBF kernel map), sift-fv (dense SIFT -> PCA -> GMM -> improved
Fisher vectors with a spatial pyramid, the ILSVRC-2011 winner's pipeline). A re-run with the same --out and settings
resumes from the finished stages.
"""

from __future__ import annotations

import argparse
import json
import time

from alexnet.baselines import DEFAULT_L2, DESCRIPTIONS, FEATURES, BaselineConfig, fit_baseline
from alexnet.cli.common import finite_float, positive_int, show_progress
from alexnet.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="fit a 2011 hand-crafted baseline (features + linear SVM)", description=__doc__)
    p.add_argument("--data", required=True, help="data source, as for alexnet train")
    p.add_argument("--features", required=True, metavar="FEATURES",
                   help="; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))  # fmt: skip
    p.add_argument("--out", help="run folder (default runs/baseline-FEATURES-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (kernel-map landmarks, sift-fv's PCA/GMM sample)")
    p.add_argument("--l2", type=finite_float, default=None,
                   help="SVM weight decay (default per features: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_L2.items()) + ")")
    p.add_argument("--max-iter", type=positive_int, default=BaselineConfig.max_iter, help="L-BFGS iterations")
    p.add_argument("--landmarks", type=positive_int, default=BaselineConfig.landmarks, help="hog-rbf: kernel-map dimension")
    p.add_argument("--gmm-components", type=positive_int, default=BaselineConfig.components,
                   help=f"sift-fv: Gaussians in the vocabulary (default {BaselineConfig.components})")
    p.add_argument("--pca-dims", type=positive_int, default=BaselineConfig.pca_dims,
                   help=f"sift-fv: descriptor dimensions after PCA (default {BaselineConfig.pca_dims})")
    p.add_argument("--batch-size", type=positive_int, default=BaselineConfig.batch_size, help="images per extraction batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.features not in FEATURES:
        raise UserError(f"unknown features {args.features!r}; use one of: {', '.join(FEATURES)}")
    if args.l2 is None:
        args.l2 = DEFAULT_L2[args.features]
    if not args.l2 > 0:
        raise UserError(f"--l2 must be > 0, got {args.l2}")
    out = args.out or f"runs/baseline-{args.features}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = BaselineConfig(data=args.data, features=args.features, seed=args.seed, l2=args.l2, max_iter=args.max_iter,
                         landmarks=args.landmarks, components=args.gmm_components, pca_dims=args.pca_dims,
                         batch_size=args.batch_size)  # fmt: skip
    m = fit_baseline(cfg, out, progress=show_progress(args))
    if args.json:
        print(json.dumps({**m, "run": out}))
        return 0
    tag = "  (SYNTHETIC data)" if m["synthetic"] else ""
    print(f"{m['features']}: {m['description']}{tag}")
    print(f"test (val split) top-1 error {m['val_top1_err']:.2%}   top-5 error {m['val_top5_err']:.2%}   "
          f"(accuracy {1 - m['val_top1_err']:.2%}, {m['val_n']:,} images; train error {m['train_top1_err']:.2%})")  # fmt: skip
    print(f"features: {m['feature_dim']} dims at {m['extract_images_per_sec']:,.0f} images/s; "
          f"SVM fit {m['fit_seconds']:.1f} s; total {m['train_seconds_total']:.1f} s")  # fmt: skip
    print(f"run folder: {out}  (alexnet eval {out} | alexnet predict {out} IMAGE)")
    return 0
