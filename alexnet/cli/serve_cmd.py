"""``alexnet serve RUN``: a web page and an HTTP API for one model (FastAPI + uvicorn).

Binds to 127.0.0.1 (this machine only) unless ``--host`` says otherwise; ``--host 0.0.0.0``
exposes the server to the network and is the user's explicit choice. Endpoints: ``GET /``
(the page), ``POST /v1/predict[?k=5]`` (multipart files or a raw image body), ``GET /v1/model``,
``GET /healthz``.
"""

from __future__ import annotations

import argparse
import sys

from alexnet.cli.common import add_runtime_options, float_in, int_in, positive_int

MAX_BODY_MB = 1024  # a request body is held in memory; more than this is no image upload


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (page + JSON API)", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder, checkpoint, torchvision AlexNet state_dict, or an exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int_in(1, 65535), default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=positive_int, default=1, help="server processes, each with the model (default 1)")
    p.add_argument("--max-body-mb", type=float_in(0, MAX_BODY_MB, low_open=True), default=10.0, help="largest request body in MB (default 10; over it: 413)")
    p.add_argument("--max-pixels", type=positive_int, default=25_000_000, help="largest image in pixels (default 25M; over it: 413)")
    p.add_argument("--max-files", type=positive_int, default=16, help="most files in one request (default 16)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.serving.app import ServeConfig, check_address, serve

    cfg = ServeConfig(
        source=args.run, device=args.device, precision=args.precision, max_body=int(args.max_body_mb * 1e6),
        max_pixels=args.max_pixels, max_files=args.max_files,
    )  # fmt: skip
    check_address(args.host, args.port)  # before the model loads and before anything says "listening"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"alexnet serve: listening on {args.host}: reachable from other machines", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host

    def ready() -> None:
        print(f"alexnet serve: {args.run} on http://{host}:{args.port}/ (Ctrl-C stops)", flush=True)

    serve(cfg, args.host, args.port, args.workers, ready)
    return 0

