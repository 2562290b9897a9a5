"""``alexnet bench serve``: latency and throughput of ``alexnet serve`` over loopback, beside the
same model's in-process latency with PyTorch and with onnxruntime, measured in one run.

The three measure the same work per request: one photo-like JPEG of about 500x375 (quality 90)
decoded, resized and cropped, normalised, and one forward pass (batch 1):

* ``in-process``: :class:`alexnet.serving.app.ServedModel` called directly (what the server runs),
  from a worker thread as in the server;
* ``onnxruntime``: the model exported by ``alexnet export``, run by
  :class:`alexnet.inference.OnnxPredictor` with the same decoding;
* ``server c=1`` / ``server c=16``: ``alexnet serve`` started as a subprocess on a free port of
  127.0.0.1, and a load generator here (threads with keep-alive HTTP connections) posting the
  image as a raw body to ``/v1/predict``; ``c`` requests in flight at once.

Every loop is bounded: ``--requests`` per server level (default 500), ``--iters`` in-process
calls, and ``--max-seconds`` per level. Traffic goes to 127.0.0.1 only. The goal:
server p50 at c=1 <= 1.2x onnxruntime's in-process p50, and no errors at c=16.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from alexnet import models
from alexnet.bench.serve import GOAL_RATIO, benchmark
from alexnet.cli.common import float_in, positive_int
from alexnet.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alexnet bench serve``."""
    p = sub.add_parser("serve", help="alexnet serve's p50/p99 and req/s vs in-process PyTorch and onnxruntime", description=__doc__)
    p.add_argument("--run", help="run folder to serve (default: a freshly initialised --model)")
    p.add_argument("--model", choices=models.available(), default="alexnet", help="model when no --run (default alexnet)")
    p.add_argument("--requests", type=positive_int, default=500, help="requests per concurrency level (default 500)")
    p.add_argument("--concurrency", default="1,16", help="comma-separated levels (default 1,16)")
    p.add_argument("--iters", type=positive_int, default=100, help="in-process calls for PyTorch and onnxruntime (default 100)")
    p.add_argument("--max-seconds", type=float_in(0, 86400, low_open=True), default=300.0, help="time bound for each loop (default 300)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="PyTorch precision, in-process and in the server (default fp32, as onnxruntime)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure the three and print the table (or JSON)."""
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise UserError(f"--concurrency: expected comma-separated whole numbers, got {args.concurrency!r}") from None
    if any(c < 1 or c > 64 for c in levels):
        raise UserError("--concurrency: each level must be between 1 and 64")
    result = benchmark(args.run, args.model, args.requests, levels, args.iters, args.max_seconds, args.precision)
    if args.json:
        print(json.dumps(result))
        return 0
    _print_table(result)
    return 0


def _print_table(result: dict[str, Any]) -> None:
    print(f"bench serve: {result['model']}, {result['precision']}, one photo-like JPEG (500x375) per request, batch 1")
    print(f"  {'':24} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>8} {'errors':>7} {'n':>5}")
    for label, s in (("in-process PyTorch", result["in_process_torch"]), ("in-process onnxruntime", result["onnxruntime"])):
        print(f"  {label:24} {s['p50_ms']:9.2f} {s['p99_ms']:9.2f} {1000 / s['p50_ms']:8.1f} {'':>7} {s['n']:5d}")
    for lv in result["server"]:
        p50, p99 = lv.get("p50_ms", float("nan")), lv.get("p99_ms", float("nan"))
        print(f"  {'server c=' + str(lv['concurrency']):24} {p50:9.2f} {p99:9.2f} {lv['req_per_s']:8.1f} {lv['errors']:7d} {lv['requests']:5d}")
    ratio = result["server_p50_c1_over_onnxruntime_p50"]
    if ratio is not None:
        verdict = "met" if result["goal_met"] else "NOT met"
        print(f"  server p50 (c=1) / onnxruntime p50 = {ratio:.2f} (goal <= {GOAL_RATIO}, no errors at c=16): {verdict}")
    print(f"  load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (a loaded machine inflates every number)")
