"""``alexnet models``: the registered models, their parameter counts and input sizes."""

from __future__ import annotations

import argparse
import json

from alexnet import models
from alexnet.cli.common import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models", description=__doc__)
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classes of the last layer (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name in models.available():
        entry = models.info(name)
        net = models.create(name, args.num_classes)
        rows.append(
            {"name": name, "parameters": models.count_parameters(net), "input_size": entry.image_size,
             "description": entry.description}
        )  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(15, *(len(r["name"]) for r in rows))
    print(f"{'name':<{width}} {'parameters':>12} {'input':>6}  description")
    for r in rows:
        print(f"{r['name']:<{width}} {r['parameters']:>12,} {r['input_size']:>6}  {r['description']}")
    return 0
