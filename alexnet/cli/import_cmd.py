"""``alexnet import caffe DEPLOY.prototxt WEIGHTS.caffemodel [--mean MEAN] --out RUN``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import weights from another framework (Caffe)", description=__doc__)
    p.set_defaults(func=lambda args: p.print_help() or 2)
