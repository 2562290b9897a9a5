"""``alexnet bench ...``: throughput benchmarks that print our number beside a baseline measured
in the same run."""

from __future__ import annotations

import argparse
import importlib

# One module per benchmark, each with add_parser(subparsers) setting func=run.
BENCHMARKS = (
    "alexnet.cli.bench_train_cmd",
    "alexnet.cli.bench_prepare_cmd",
    "alexnet.cli.bench_data_cmd",
    "alexnet.cli.bench_serve_cmd",
    "alexnet.cli.bench_baseline_cmd",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput benchmarks (ours beside a baseline)", description=__doc__)
    benches = p.add_subparsers(title="benchmarks", metavar="BENCHMARK", parser_class=type(p))
    for name in BENCHMARKS:
        importlib.import_module(name).add_parser(benches)
    p.set_defaults(func=lambda args: p.print_help() or 2)
