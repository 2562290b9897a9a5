"""``alexnet bench train``: training-step throughput, ours vs torchvision's alexnet in the same
precision, the plain fp32 baseline and the naive faithful net, measured in one run; then fp32
and bf16 of the paper net and of alexnet-small beside the precision ``auto`` picks for each
(``--check``: exit 1 if it picked the slower by more than 5%).

Configurations and timing: alexnet/bench/step.py; the comparisons: alexnet/bench/train.py;
``--nproc``: alexnet/bench/scaling.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from alexnet.bench.step import (
    CONFIG_NAMES,
    CUDA_ONLY_BY_DEFAULT,
    PEAK_MATMUL_N,
    build_configs,
    compile_configs,
    hardware,
)
from alexnet.bench.train import COMPARISONS, PRECISION_MODELS, measure, measure_precisions
from alexnet.errors import UserError
from alexnet.runtime import DEVICES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alexnet bench train``."""
    p = sub.add_parser("train", help="training-step throughput: ours vs torchvision (same precision), fp32 baseline, naive net", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default="alexnet", help="registered model to benchmark (default alexnet)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5; median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--configs", default=None, metavar="NAME,...",
                   help="measure only these configurations (baseline and ours are always measured); "
                        "default: all that apply of " + ", ".join(CONFIG_NAMES) + " (the compiled ones on CUDA "
                        "only unless named)")  # fmt: skip
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="instead of the table: data-parallel scaling of 'ours' under torchrun + DDP for 1, 2, "
                        "4, ... N processes (per-process and total img/s, efficiency; --batch-size is per "
                        "process); see alexnet/bench/scaling.py")  # fmt: skip
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the precision auto picks (fp32 or bf16) trained more than 5%% slower than the "
                        "other, for the paper net or alexnet-small (both are measured in fp32 and bf16 after the "
                        "table; without --check, only when --configs is not given)")  # fmt: skip
    p.add_argument("--remeasure", action="store_true",
                   help="measure auto's choice again and replace the cached one (alexnet/precision.py)")
    p.add_argument("--json", action="store_true", help="print one JSON object (and nothing else) on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure every configuration and print the table (or JSON)."""
    from alexnet.precision import choose
    from alexnet.runtime import resolve_device

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.nproc is not None and args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    device = resolve_device(args.device)
    # What `auto` picks for each model (as `alexnet train` would: from the cache, or measured now).
    models = dict.fromkeys((args.model, *PRECISION_MODELS))
    choices = {m: choose("auto", None, device, m, refresh=args.remeasure) for m in models}
    choice = choices[args.model]
    precision = choice.precision
    configs = build_configs(args.model, precision, device.type, choice.channels_last)
    if args.nproc is not None:
        return _run_scaling(args, configs, device.type)
    if args.configs:
        wanted = {name.strip() for name in args.configs.split(",") if name.strip()}
        unknown = sorted(wanted - set(CONFIG_NAMES))
        if unknown:
            raise UserError(f"unknown --configs {', '.join(unknown)}; choose from {', '.join(CONFIG_NAMES)}")
        if device.type != "cuda":  # the compiled ones are measured on a CPU only when named
            configs += [c for c in compile_configs(args.model, precision) if c.name in wanted]
        configs = [c for c in configs if c.name in wanted | {"baseline", "ours"}]
    summary = measure(configs, args.model, args.batch_size, args.steps, args.warmup, str(device), precision)
    summary["auto"] = {m: c.to_dict() for m, c in choices.items()}
    rows = []
    if args.check or not args.configs:  # a table cut down with --configs skips it, unless --check asks
        rows = measure_precisions(choices, summary, args.batch_size, args.steps, args.warmup, str(device))
        summary["precision_check"] = rows
    wrong = [r["model"] for r in rows if not r["right"]]
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table(summary)
        if rows:
            _print_precision_check(rows, args.batch_size)
    if args.check and wrong:
        print(f"bench train --check: auto picked the slower precision by more than 5% for {', '.join(wrong)} "
              "(see the table above)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _print_precision_check(rows: list[dict[str, Any]], batch_size: int) -> None:
    print()
    print(f"precision auto picks (alexnet/precision.py), and what each trains at (batch {batch_size}, same run):")
    width = max(len(r["model"]) for r in rows) + 2
    print(f"{'model':<{width}} {'fp32 img/s':>10} {'bf16 img/s':>10} {'bf16/fp32':>9}  {'auto':<5} {'verdict'}")
    for r in rows:
        verdict = ("the faster" if r["picked_vs_other"] >= 1 else "within 5% of the faster") if r["right"] else (
            f"WRONG: {1 / r['picked_vs_other']:.2f}x slower than the other")  # fmt: skip
        print(f"{r['model']:<{width}} {r['fp32_img_s']:>10.1f} {r['bf16_img_s']:>10.1f} {r['bf16_vs_fp32']:>8.2f}x  "
              f"{r['auto']:<5} {verdict}")  # fmt: skip
    for r in rows:
        print(f"  {r['model']}: {r['why']}")


def _run_scaling(args: argparse.Namespace, configs: list[Any], device_type: str) -> int:
    """``--nproc N``: the scaling measurement of the ``ours`` configuration."""
    from alexnet.bench.scaling import measure_scaling

    ours = next(c for c in configs if c.name == "ours")
    started = time.perf_counter()
    summary = {"nproc": args.nproc, "model": args.model, "label": ours.label, "batch_size": args.batch_size,
               "steps": args.steps, "warmup": args.warmup, "device": device_type, "hardware": hardware(),
               **measure_scaling(ours, args.nproc, args.batch_size, args.steps, args.warmup, device_type)}  # fmt: skip
    summary["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(summary))
    else:
        print_scaling(summary)
    return 0


def _print_table(s: dict[str, Any]) -> None:
    hw = s["hardware"]
    print(f"alexnet bench train: model {s['model']}, batch {s['batch_size']}, {s['device']}, "
          f"median of {s['steps']} steps after {s['warmup']} warm-up, each configuration in a fresh process")  # fmt: skip
    print(f"hardware: {hw['cpu']}, {hw['cpu_count']} CPUs ({hw['torch_threads']} torch threads), "
          f"{hw['cpu_capability']}" + (f", GPU {hw['gpu']}" if "gpu" in hw else "") + f"; torch {hw['torch']}")  # fmt: skip
    print(f"native precision here: {s['native_precision']}; ours runs {s['precision']}")
    other = s["other_processes_cpus"]
    if other is not None and other >= 0.2:
        print(f"warning: other processes kept {other:.1f} of {hw['cpu_count']} CPUs busy during the run; "
              "timings are unreliable, rerun on an idle machine")  # fmt: skip
    print()
    width = max(len(r["name"] + r["label"]) for r in s["configs"]) + 3
    print(f"{'config':<{width}} {'img/s':>8} {'ms/step':>9} {'vs base':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for r in s["configs"]:
        compiled = f"  (compile {r['compile_s']:.0f} s)" if r.get("compile_s") is not None else ""
        print(f"{r['name'] + ': ' + r['label']:<{width}} {r['img_s']:>8.1f} {r['step_ms']:>9.0f} "
              f"{r['ratio']:>7.2f}x {r['train_gflop_s']:>8.1f} {100 * r['peak_fraction']:>7.1f}%{compiled}")  # fmt: skip
    print()
    peak = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in s["peak_gflop_s"].items())
    ours = next(r for r in s["configs"] if r["name"] == "ours")
    print(f"matmul peak ({PEAK_MATMUL_N.get(s['device'].split(':')[0], 2048)}^3, same run): {peak}")
    print(f"ours: 3 x {ours['forward_flops_per_img'] / 1e9:.2f} GFLOP/image x {ours['img_s']:.1f} img/s = "
          f"{ours['train_gflop_s']:.0f} GFLOP/s = {100 * ours['peak_fraction']:.0f}% of the {ours['precision']} "
          f"matmul peak")  # fmt: skip
    c = s["comparisons"]
    for key, _, _, words in COMPARISONS:
        if key in c:
            print(f"{words}: {c[key]:.2f}x")
    if "lrn_share_of_step" in c:
        print(f"LRN's share of ours' step (ours vs no-lrn): {100 * c['lrn_share_of_step']:.0f}%")
    skipped = [n for n in CUDA_ONLY_BY_DEFAULT if n not in {r["name"] for r in s["configs"]}]
    if skipped and not s["device"].startswith("cuda"):
        print(f"not measured on a CPU unless named in --configs (compiling takes minutes): {', '.join(skipped)}")
    print(f"took {s['seconds']:.0f} s")


def print_scaling(s: dict[str, Any]) -> None:
    """The scaling table (``s`` as returned by ``alexnet bench train --nproc --json``)."""
    hw = s["hardware"]
    print(f"alexnet bench train --nproc {s['nproc']}: {s['label']}, batch {s['batch_size']} per process, "
          f"median of {s['steps']} steps after {s['warmup']} warm-up, torchrun + DDP "
          f"({'nccl' if s['device'] == 'cuda' else 'gloo'})")  # fmt: skip
    print(f"hardware: {hw['cpu']}, {hw['cpu_count']} CPUs" + (f", GPU {hw['gpu']}" if "gpu" in hw else "")
          + f"; {s['threads_per_process']} CPU thread(s) per process in every run; torch {hw['torch']}")  # fmt: skip
    print()
    print(f"{'processes':>9} {'per-process img/s':>24} {'total img/s':>12} {'ms/step':>8} "
          f"{'efficiency':>10} {'all-reduce ms':>14}")  # fmt: skip
    for r in s["runs"]:
        per = ", ".join(f"{v:.1f}" for v in r["per_process_img_s"])
        ar = f"{r['allreduce_ms']:.0f}" if r["world_size"] > 1 else "-"
        print(f"{r['world_size']:>9} {per:>24} {r['total_img_s']:>12.1f} {r['step_ms']:>8.0f} "
              f"{100 * r['efficiency']:>9.0f}% {ar:>14}")  # fmt: skip
    print()
    mb = 4 * s["gradient_numel"] / 1e6
    print(f"all-reduce: {s['gradient_numel'] / 1e6:.1f}M float32 gradients = {mb:.0f} MB per step, timed alone "
          "after the steps (DDP overlaps it with the backward pass in buckets)")  # fmt: skip
    print(f"took {s['seconds']:.0f} s")
