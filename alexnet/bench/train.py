"""``alexnet bench train``'s measurement: ours beside torchvision's alexnet in the same precision,
the usual fp32 loop and the naive faithful net, all measured in one run.

What each configuration is and how a step is timed: :mod:`alexnet.bench.step` (every
configuration in a fresh process). The summary also says which precision the machine runs
natively: on CPUs without native bf16 (AVX2 only: most laptops) ours runs fp32, and a
comparison against fp32 alone would flatter it on bf16 CPUs, so the same-precision ratio comes
first. The command line and the table: ``cli/bench_train_cmd.py``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any

from alexnet.bench.step import hardware, in_fresh_process, native_precision
from alexnet.runtime import OtherLoad

# Ratios reported under the table: (key, numerator config, denominator config, what it says).
COMPARISONS = (
    ("vs_torchvision_same_precision", "ours", "torchvision", "ours vs torchvision alexnet, same precision and settings"),
    ("vs_fp32_baseline", "ours", "baseline", "ours vs the plain fp32 baseline (PyTorch defaults)"),
    ("vs_naive_faithful", "ours", "torch-lrn", "ours vs the naive faithful net (torch.nn.LocalResponseNorm)"),
    ("lrn_op_vs_former", "ours", "lrn-function", "LRN custom op vs its former autograd.Function (same kernels)"),
    ("fp32_vs_fp32_baseline", "ours-fp32", "baseline", "ours in fp32 vs the plain fp32 baseline"),
    ("compiled_vs_torchvision_compiled", "ours-compiled", "torchvision-compiled",
     "ours vs torchvision alexnet, both torch.compile"),
    ("compiled_vs_eager", "ours-compiled", "ours", "ours compiled vs ours eager"),
)  # fmt: skip


def measure(configs: list[Any], model: str, batch_size: int, steps: int, warmup: int, device: str,
            precision: str) -> dict[str, Any]:  # fmt: skip
    """Measure the matmul peak and ``configs``, each in a fresh process; the summary dict."""
    device_type = device.split(":")[0]

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started, other_load = time.perf_counter(), OtherLoad()
    say(f"measuring the matmul peak on {device_type} ...")
    peak = in_fresh_process({"kind": "peak", "device": device, "bf16": precision == "bf16"})
    results = []
    for cfg in configs:
        say(f"measuring {cfg.name}: {cfg.label} ...")
        spec = {"kind": "config", "config": asdict(cfg), "batch_size": batch_size, "steps": steps,
                "warmup": warmup, "device": device}  # fmt: skip
        results.append(in_fresh_process(spec))
    by_name = {r["name"]: r for r in results}
    base, ours = by_name["baseline"], by_name["ours"]
    for r in results:
        r["ratio"] = r["img_s"] / base["img_s"]
        r["peak_fraction"] = r["train_gflop_s"] / peak.get(r["precision"], peak["fp32"])
    comparisons = {key: by_name[a]["img_s"] / by_name[b]["img_s"]
                   for key, a, b, _ in COMPARISONS if a in by_name and b in by_name}  # fmt: skip
    if "no-lrn" in by_name:  # the LRN's share of a step: what removing it saves
        comparisons["lrn_share_of_step"] = 1 - by_name["no-lrn"]["step_ms"] / ours["step_ms"]
    return {
        "baseline_img_s": base["img_s"],
        "ours_img_s": ours["img_s"],
        "ratio": ours["img_s"] / base["img_s"],
        "comparisons": comparisons,
        "ours_gflop_s": ours["train_gflop_s"],
        "ours_peak_fraction": ours["peak_fraction"],
        "model": model,
        "batch_size": batch_size,
        "steps": steps,
        "warmup": warmup,
        "device": device,
        "precision": precision,
        "native_precision": native_precision(device_type),
        "peak_gflop_s": peak,
        "hardware": hardware(),
        "configs": results,
        "seconds": time.perf_counter() - started,
        "other_processes_cpus": other_load.cpus(),
    }
