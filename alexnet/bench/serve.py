"""``alexnet bench serve``'s measurement: latency and throughput of ``alexnet serve`` over
loopback (a subprocess on 127.0.0.1 and a load generator here), beside the same model's
in-process latency with PyTorch and with onnxruntime, in one run.

What each line measures and the goal, and the printing: ``cli/bench_serve_cmd.py``.
"""

from __future__ import annotations

import http.client
import io
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
from alexnet.errors import UserError

GOAL_RATIO = 1.2  # server p50 at c=1 over onnxruntime's in-process p50 (the goal)


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


def _wait_until_healthy(server: subprocess.Popen[str], port: int, seconds: float = 300) -> None:
    """Return once the server on ``port`` answers /healthz; a :class:`UserError` if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            raise UserError(f"the server exited: {(server.stderr.read() if server.stderr else '').strip()[-300:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(f"the server did not start within {seconds:g} s") from None
            time.sleep(0.3)


def benchmark(run_folder: str | None, model: str, requests: int, levels: list[int], iters: int, max_seconds: float,
              precision: str) -> dict[str, Any]:  # fmt: skip
    """Serve ``run_folder`` (default: a freshly initialised ``model``) and measure in-process PyTorch and
    onnxruntime (``iters`` calls each) and the server at each concurrency of ``levels``
    (``requests`` each), every loop bounded by ``max_seconds``: the result (what ``--json`` prints)."""
    from alexnet.bench.prepare import photo_like
    from alexnet.data.convention import InputConvention, InputNorm
    from alexnet.inference import OnnxPredictor
    from alexnet.interop.onnx_model import export_onnx
    from alexnet.interop.runs import write_run
    from alexnet.serving.app import ServeConfig, ServedModel

    tmp = Path(tempfile.mkdtemp(prefix="alexnet-bench-serve-"))
    server = None
    try:
        run_dir = Path(run_folder) if run_folder else tmp / "run"
        if not run_folder:  # a fresh model: latency does not depend on what the weights learned
            torch.manual_seed(0)
            entry = models.info(model)
            side = entry.image_size
            size = 256 if side >= 224 else side + 4
            write_run(run_dir, models.create(model, 1000), model, {}, [f"class{i}" for i in range(1000)],
                      InputConvention(3, size, side, InputNorm((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))), "bench", {"from": "bench serve"})  # fmt: skip
        buf = io.BytesIO()
        photo_like(np.random.default_rng(0), 500, 375).save(buf, "JPEG", quality=90)
        image = buf.getvalue()
        image_path = tmp / "image.jpg"
        image_path.write_bytes(image)

        # In-process, PyTorch: the server's own ServedModel, without HTTP, called from a worker thread
        # as the server calls it. (On a loaded 2-core machine a forward pass called from the main
        # thread was 50-300x slower than from a worker thread: alexnet-small 150-860 ms vs 3 ms.)
        predictor = ServedModel(ServeConfig(str(run_dir), device="cpu", precision=precision))
        with ThreadPoolExecutor(1) as pool:
            call = lambda: pool.submit(predictor.topk, predictor.decode(image, "bench").unsqueeze(0), 5).result()
            torch_ms = _timed(call, iters, max_seconds)
        model_name = predictor.name

        # In-process, onnxruntime: the exported model, same decoding (its eval transform).
        onnx_path = tmp / "model.onnx"
        export = export_onnx(run_dir, onnx_path)
        ort_model = OnnxPredictor(onnx_path)
        ort_ms = _timed(lambda: ort_model.predict([str(image_path)], 5), iters, max_seconds)

        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "alexnet", "serve", str(run_dir), "--port", str(port), "--device", "cpu",
             "--precision", precision], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_until_healthy(server, port)
        load(port, image, 5, 1, 30)  # warm-up
        levels_out = [load(port, image, requests, c, max_seconds) for c in levels]
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
        "benchmark": "serve", "model": model_name, "precision": precision, "image": "photo-like JPEG 500x375 q90",
        "in_process_torch": torch_stats, "onnxruntime": ort_stats, "onnx_check_max_abs_diff": export.max_abs_diff,
        "server": levels_out, "server_p50_c1_over_onnxruntime_p50": ratio, "goal_ratio": GOAL_RATIO,
        "goal_met": ratio is not None and ratio <= GOAL_RATIO and all(lv["errors"] == 0 for lv in levels_out),
        "host": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                 "load_average": os.getloadavg()},
    }  # fmt: skip
    return result
