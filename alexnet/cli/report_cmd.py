"""``alexnet report``: one self-contained HTML page of what a run learned (curves, the paper's
Figures 3 and 4, per-class errors, confusions, mistake severity)."""

from __future__ import annotations

import argparse

from alexnet.cli.common import add_runtime_options, positive_int, show_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report of a run: curves, Figures 3 and 4, errors", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder (from alexnet train, demo or baseline)")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--out", metavar="FILE.html", help="where to write the page (default RUN/report.html)")
    p.add_argument("--samples", type=positive_int, default=8, help="validation images in Figure 4 (default 8)")
    p.add_argument("--k", type=positive_int, default=6, help="nearest training images per row of Figure 4 right (default 6)")
    views = p.add_mutually_exclusive_group()
    views.add_argument("--ten-crop", action="store_true", help="also report the ten-crop error (section 4.1)")
    views.add_argument("--flip", action="store_true", help="also report the centre+mirror error")
    p.add_argument("--ensemble", nargs="+", default=(), metavar="RUN2",
                   help="also report the softmax-averaged ensemble of RUN with these runs")  # fmt: skip
    p.add_argument("--no-retrieval", action="store_true",
                   help="skip Figure 4 right (it runs the model over the whole training split once; cached)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.reporting.report import ReportOptions, build_report

    views = "ten-crop" if args.ten_crop else "flip" if args.flip else None
    options = ReportOptions(data=args.data, out=args.out, samples=args.samples, neighbours=args.k,
                            retrieval=not args.no_retrieval, views=views,
                            ensemble=tuple(args.ensemble), device=args.device, precision=args.precision,
                            progress=show_progress(args))  # fmt: skip
    path = build_report(args.run, options)
    print(f"report written to {path}")
    return 0
