"""``alexnet bench serve``: latency and throughput of ``alexnet serve`` over loopback, beside the
same model's in-process latency with PyTorch and with onnxruntime, measured in one run.

The three measure the same work per request: one photo-like JPEG of about 500x375 (quality 90)
decoded, resized and cropped, normalised, and one forward pass (batch 1):

* ``in-process``: :class:`alexnet.serving.app.Predictor` called directly (what the server runs),
  from a worker thread as in the server;
* ``onnxruntime``: the model exported by ``alexnet export``, run by
  :class:`alexnet.interop.onnx_model.OnnxModel` with the same decoding;
* ``server c=1`` / ``server c=16``: ``alexnet serve`` started as a subprocess on a free port of
  127.0.0.1, and a load generator here (threads with keep-alive HTTP connections) posting the
  image as a raw body to ``/v1/predict``; ``c`` requests in flight at once.

Every loop is bounded: ``--requests`` per server level (default 500), ``--iters`` in-process
calls, and ``--max-seconds`` per level. Traffic goes to 127.0.0.1 only. The goal (issue 15):
server p50 at c=1 <= 1.2x onnxruntime's in-process p50, and no errors at c=16.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet import models
from alexnet.cli.common import positive_int
from alexnet.errors import UserError

GOAL_RATIO = 1.2  # server p50 at c=1 over onnxruntime's in-process p50 (issue 15)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="alexnet serve's p50/p99 and req/s vs in-process PyTorch and onnxruntime", description=__doc__)
    p.add_argument("--run", help="run folder to serve (default: a freshly initialised --model)")
    p.add_argument("--model", choices=models.available(), default="alexnet", help="model when no --run (default alexnet)")
    p.add_argument("--requests", type=positive_int, default=500, help="requests per concurrency level (default 500)")
    p.add_argument("--concurrency", default="1,16", help="comma-separated levels (default 1,16)")
    p.add_argument("--iters", type=positive_int, default=100, help="in-process calls for PyTorch and onnxruntime (default 100)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="time bound for each loop (default 300)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="PyTorch precision, in-process and in the server (default fp32, as onnxruntime)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)), "n": len(ms)}


def _timed(fn: Any, iters: int, max_seconds: float, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(out) < iters and time.perf_counter() < deadline:
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(port: int, body: bytes, requests: int, concurrency: int, max_seconds: float) -> dict[str, Any]:
    """Post ``body`` ``requests`` times to 127.0.0.1:``port`` with ``concurrency`` in flight (bounded)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        nonlocal issued
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    if issued >= requests or time.perf_counter() > deadline:
                        return
                    issued += 1
                t = time.perf_counter()
                try:
                    conn.request("POST", "/v1/predict?k=5", body=body, headers={"Content-Type": "image/jpeg"})
                    r = conn.getresponse()
                    payload = r.read()
                    ok = r.status == 200 and b'"topk"' in payload
                except (OSError, http.client.HTTPException) as e:
                    ok, payload = False, str(e).encode()
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    (latencies.append(ms) if ok else errors.append(payload[:200].decode(errors="replace")))
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    result = {"concurrency": concurrency, "requests": len(latencies) + len(errors), "errors": len(errors),
              "req_per_s": (len(latencies) + len(errors)) / wall, "seconds": wall}  # fmt: skip
    if latencies:
        result |= _percentiles(latencies)
    if errors:
        result["first_error"] = errors[0]
    return result


def run(args: argparse.Namespace) -> int:
    from alexnet.bench.prepare import photo_like
    from alexnet.data.pipeline import InputNorm
    from alexnet.interop.onnx_model import OnnxModel, export_onnx
    from alexnet.interop.runs import write_run
    from alexnet.serving.app import Predictor, ServeConfig

    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise UserError(f"--concurrency: expected comma-separated whole numbers, got {args.concurrency!r}") from None
    if any(c < 1 or c > 64 for c in levels):
        raise UserError("--concurrency: each level must be between 1 and 64")
    tmp = Path(tempfile.mkdtemp(prefix="alexnet-bench-serve-"))
    server = None
    try:
        run_dir = Path(args.run) if args.run else tmp / "run"
        if not args.run:  # a fresh model: latency does not depend on what the weights learned
            torch.manual_seed(0)
            entry = models.info(args.model)
            side = entry.image_size
            size = 256 if side >= 224 else side + 4
            write_run(run_dir, models.create(args.model, 1000), args.model, {}, [f"class{i}" for i in range(1000)], 3,
                      size, side, InputNorm((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)), "bench", {"from": "bench serve"})  # fmt: skip
        buf = io.BytesIO()
        photo_like(np.random.default_rng(0), 500, 375).save(buf, "JPEG", quality=90)
        image = buf.getvalue()
        image_path = tmp / "image.jpg"
        image_path.write_bytes(image)

        # In-process, PyTorch: the server's own Predictor, without HTTP, called from a worker thread
        # as the server calls it. (On a loaded 2-core machine a forward pass called from the main
        # thread was 50-300x slower than from a worker thread: alexnet-small 150-860 ms vs 3 ms.)
        predictor = Predictor(ServeConfig(str(run_dir), device="cpu", precision=args.precision))
        with ThreadPoolExecutor(1) as pool:
            call = lambda: pool.submit(predictor.topk, predictor.decode(image, "bench").unsqueeze(0), 5).result()
            torch_ms = _timed(call, args.iters, args.max_seconds)
        model_name = predictor.loaded.name

        # In-process, onnxruntime: the exported model, same decoding (alexnet.evaluation.load_image).
        onnx_path = tmp / "model.onnx"
        export = export_onnx(run_dir, onnx_path)
        ort_model = OnnxModel(onnx_path)
        ort_ms = _timed(lambda: ort_model.predict([str(image_path)], 5), args.iters, args.max_seconds)

        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "alexnet", "serve", str(run_dir), "--port", str(port), "--device", "cpu",
             "--precision", args.precision], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise UserError(f"the server exited: {(server.stderr.read() if server.stderr else '').strip()[-300:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise UserError("the server did not start within 300 s") from None
                time.sleep(0.3)
        load(port, image, 5, 1, 30)  # warm-up
        levels_out = [load(port, image, args.requests, c, args.max_seconds) for c in levels]
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    torch_stats, ort_stats = _percentiles(torch_ms), _percentiles(ort_ms)
    c1 = next((lv for lv in levels_out if lv["concurrency"] == 1 and "p50_ms" in lv), None)
    ratio = c1["p50_ms"] / ort_stats["p50_ms"] if c1 else None
    result = {
        "benchmark": "serve", "model": model_name, "precision": args.precision, "image": "photo-like JPEG 500x375 q90",
        "in_process_torch": torch_stats, "onnxruntime": ort_stats, "onnx_check_max_abs_diff": export.max_abs_diff,
        "server": levels_out, "server_p50_c1_over_onnxruntime_p50": ratio, "goal_ratio": GOAL_RATIO,
        "goal_met": ratio is not None and ratio <= GOAL_RATIO and all(lv["errors"] == 0 for lv in levels_out),
        "host": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                 "load_average": os.getloadavg()},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"bench serve: {model_name}, {args.precision}, one photo-like JPEG (500x375) per request, batch 1")
    print(f"  {'':24} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>8} {'errors':>7} {'n':>5}")
    for label, s in (("in-process PyTorch", torch_stats), ("in-process onnxruntime", ort_stats)):
        print(f"  {label:24} {s['p50_ms']:9.2f} {s['p99_ms']:9.2f} {1000 / s['p50_ms']:8.1f} {'':>7} {s['n']:5d}")
    for lv in levels_out:
        p50, p99 = lv.get("p50_ms", float("nan")), lv.get("p99_ms", float("nan"))
        print(f"  {'server c=' + str(lv['concurrency']):24} {p50:9.2f} {p99:9.2f} {lv['req_per_s']:8.1f} {lv['errors']:7d} {lv['requests']:5d}")
    if ratio is not None:
        verdict = "met" if result["goal_met"] else "NOT met"
        print(f"  server p50 (c=1) / onnxruntime p50 = {ratio:.2f} (goal <= {GOAL_RATIO}, no errors at c=16): {verdict}")
    print(f"  load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (a loaded machine inflates every number)")
    return 0
