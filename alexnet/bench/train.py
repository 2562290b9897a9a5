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

from alexnet.bench.step import Config, hardware, in_fresh_process, native_precision
from alexnet.precision import MARGIN, Choice
from alexnet.runtime import OtherLoad

# The models whose fp32 and bf16 throughput `alexnet bench train` always shows beside auto's
# choice: the paper net and the demo's.
PRECISION_MODELS = ("alexnet", "alexnet-small")

# Ratios reported under the table: (key, numerator config, denominator config, what it says).
COMPARISONS = (
    ("vs_torchvision_same_precision", "ours", "torchvision", "ours vs torchvision alexnet, same precision and settings"),
    ("vs_fp32_baseline", "ours", "baseline", "ours vs the plain fp32 baseline (PyTorch defaults)"),
    ("vs_naive_faithful", "ours", "torch-lrn", "ours vs the naive faithful net (torch.nn.LocalResponseNorm)"),
    ("lrn_op_vs_former", "ours", "lrn-function", "LRN custom op vs its former autograd.Function (same kernels)"),
    ("fp32_vs_fp32_baseline", "ours-fp32", "baseline", "ours in fp32 vs the plain fp32 baseline"),
    ("bf16_vs_fp32_baseline", "ours-bf16", "baseline", "ours in bf16 vs the plain fp32 baseline"),
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


def measure_precisions(choices: dict[str, Choice], summary: dict[str, Any], batch_size: int, steps: int,
                       warmup: int, device: str) -> list[dict[str, Any]]:  # fmt: skip
    """fp32 and bf16 training throughput of each model in ``choices`` (in the layout auto chose
    for it), beside auto's choice: whether it picked the faster, within :data:`MARGIN`.

    Rows of the main table (``summary``) with the same model and settings are reused.
    """
    done = {(r["model"], r["precision"], r["channels_last"]): r for r in summary.get("configs", [])
            if r["name"] in ("ours", "ours-fp32", "ours-bf16")}  # fmt: skip
    rows = []
    for model, choice in choices.items():
        img_s = {}
        for precision in ("fp32", "bf16"):
            key = (model, precision, choice.channels_last)
            if key not in done:
                cfg = Config(f"{model} {precision}", f"{model}, {precision}, as the trainer runs it", model, precision,
                             choice.channels_last, True, "trainer")  # fmt: skip
                print(f"measuring {cfg.label} ...", file=sys.stderr, flush=True)
                done[key] = in_fresh_process({"kind": "config", "config": asdict(cfg), "batch_size": batch_size,
                                              "steps": steps, "warmup": warmup, "device": device})  # fmt: skip
            img_s[precision] = done[key]["img_s"]
        picked, other = img_s[choice.precision], img_s["bf16" if choice.precision == "fp32" else "fp32"]
        rows.append({
            "model": model, "fp32_img_s": img_s["fp32"], "bf16_img_s": img_s["bf16"],
            "bf16_vs_fp32": img_s["bf16"] / img_s["fp32"], "auto": choice.precision,
            "channels_last": choice.channels_last, "why": choice.describe(),
            "picked_vs_other": picked / other, "right": other <= picked * (1 + MARGIN),
        })  # fmt: skip
    return rows
