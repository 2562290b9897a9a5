"""``alexnet bench train``: training-step throughput, ours beside the usual fp32 loop, one run.

Every configuration runs in a fresh ``python -m alexnet.bench.train --worker SPEC`` process, so
allocator settings, thread pools and oneDNN caches cannot leak from one into the next. Each
does forward + backward + SGD step (momentum 0.9, weight decay 5e-4) on a fixed random batch
at the model's input size with 1000 classes; warm-up steps are excluded and the median of the
timed steps is reported.

Configurations:

* ``baseline``: ``torchvision.models.alexnet()`` in the usual fp32 loop with PyTorch's
  defaults (NCHW, default allocator, per-parameter SGD). For models whose input is smaller than
  torchvision's 224 px, the same model in that usual loop instead.
* ``ours``: the requested model in its fastest configuration: bf16 autocast where the hardware
  has native bf16 (else fp32), channels_last, :func:`alexnet.runtime.tune_cpu_allocator` (CPU)
  or cuDNN autotuning (CUDA), and :func:`alexnet.runtime.fast_sgd_options` (fused SGD).
* ``ours-fp32``: the same with fp32 instead of bf16.
* ``torch-lrn``: ``ours`` with ``torch.nn.LocalResponseNorm`` in place of our LRN (models
  with LRN only).
* ``no-lrn``: ``ours`` without LRN, to show what LRN still costs (models with LRN only).

FLOP/s: training FLOPs per image are taken as 3x the forward FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls), and compared with a
large-matmul peak measured in the same run, MFU-style.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from alexnet.errors import UserError
from alexnet.runtime import DEVICES

# Matmul size for the peak measurement: large enough to reach the BLAS plateau, small enough to
# take well under a second per call on a 2-core CPU.
PEAK_MATMUL_N = {"cpu": 2048, "cuda": 8192}


CONFIG_NAMES = ("baseline", "ours", "ours-fp32", "torch-lrn", "no-lrn")


@dataclass(frozen=True)
class Config:
    """One measured configuration (serialised to the worker process as JSON)."""

    name: str
    label: str
    model: str  # a registry name, or "torchvision" for torchvision.models.alexnet()
    precision: str  # "fp32" | "bf16"
    channels_last: bool
    tuned: bool  # our runtime settings: tune_cpu_allocator() on CPU, cudnn.benchmark on CUDA
    optimizer: str  # "default" (PyTorch's choice) | "foreach" | "fused"
    lrn: str = "ours"  # "ours" | "torch" | "off"


def build_configs(model: str, precision: str, device_type: str) -> list[Config]:
    """The configurations to measure for ``model`` (see the module docstring)."""
    import torch

    from alexnet import models
    from alexnet.runtime import fast_sgd_options

    info = models.info(model)  # UserError for an unknown name
    has_lrn = "lrn" in models.model_options(model)
    # torchvision's alexnet needs >= ~63 px input; for the 28 px model the usual loop runs it.
    usual = "torchvision" if info.image_size >= 224 else model
    fast_opt = next(iter(fast_sgd_options(torch.device(device_type))))  # "fused" or "foreach"
    dtype = f"{precision} autocast" if precision != "fp32" else "fp32"
    ours = Config("ours", f"{model}, {dtype}, channels_last, tuned runtime, {fast_opt} SGD",
                  model, precision, True, True, fast_opt)  # fmt: skip
    configs = [
        Config("baseline", f"{'torchvision alexnet' if usual == 'torchvision' else model}, fp32, PyTorch defaults",
               usual, "fp32", False, False, "default"),
        ours,
    ]  # fmt: skip
    if precision != "fp32":
        configs.append(replace(ours, name="ours-fp32", label=ours.label.replace(dtype, "fp32"), precision="fp32"))
    if has_lrn:
        configs.append(replace(ours, name="torch-lrn", label="ours with torch.nn.LocalResponseNorm", lrn="torch"))
        configs.append(replace(ours, name="no-lrn", label="ours without LRN (lrn=False)", lrn="off"))
    return configs


# --------------------------------------------------------------------------------------------
# Worker side (runs in a fresh process).


def _torch_lrn(ours: Any) -> Any:
    """``torch.nn.LocalResponseNorm`` with ``ours``' parameters, run in float32.

    PyTorch's CPU LRN has no bf16 kernel path worth measuring (its avg_pool3d autocasts to
    float32 and the result comes back in mixed dtypes), so it gets float32 in and casts back.
    """
    import torch
    from torch import nn

    class TorchLRN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # torch divides alpha by size; ours.alpha_effective already is alpha' for either convention.
            self.lrn = nn.LocalResponseNorm(ours.size, ours.alpha_effective * ours.size, ours.beta, ours.k)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lrn(x.float()).to(x.dtype)

    return TorchLRN()


def _build_model(cfg: Config) -> tuple[Any, int, int]:
    """(model, input side, input channels) for ``cfg``."""
    import torchvision

    from alexnet import models

    if cfg.model == "torchvision":
        return torchvision.models.alexnet(num_classes=1000), 224, 3
    options = {"lrn": False} if cfg.lrn == "off" else {}
    model = models.create(cfg.model, 1000, **options)
    if cfg.lrn == "torch":
        model.features.norm1 = _torch_lrn(model.features.norm1)
        model.features.norm2 = _torch_lrn(model.features.norm2)
    in_channels = model.layers_by_role()["conv1"].in_channels
    return model, models.info(cfg.model).image_size, in_channels


def _forward_flops(model: Any, x: Any) -> int:
    """Forward FLOPs of one image (convolutions and matmuls, as FlopCounterMode counts them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x[:1])
    return int(counter.get_total_flops())


def measure_config(cfg: Config, batch_size: int, steps: int, warmup: int, device_name: str,
                   distributed: bool = False) -> dict[str, Any]:  # fmt: skip
    """Time ``steps`` training steps of ``cfg`` after ``warmup`` untimed ones (this process).

    ``distributed``: wrap the model in ``DistributedDataParallel`` (the process group must be
    initialised), as the trainer does under torchrun.
    """
    import torch

    from alexnet.models import count_parameters
    from alexnet.runtime import autocast, tune_cpu_allocator

    device = torch.device(device_name)
    if cfg.tuned and device.type == "cpu":
        tune_cpu_allocator()
    if cfg.tuned and device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick its fastest kernels
    torch.manual_seed(0)
    model, side, in_channels = _build_model(cfg)
    model.to(device).train()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(batch_size, in_channels, side, side, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    flops = _forward_flops(model, x)
    gradient_numel = count_parameters(model)
    if distributed:
        from alexnet.training.distributed import data_parallel

        model = data_parallel(model, device)
    opt_kw = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[cfg.optimizer]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **opt_kw)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(device, cfg.precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        **asdict(cfg),
        "img_s": batch_size / median,
        "step_ms": median * 1e3,
        "steps_ms": [round(t * 1e3, 2) for t in times],
        "forward_flops_per_img": flops,
        "gradient_numel": gradient_numel,
        "train_gflop_s": 3 * flops * batch_size / median / 1e9,
        "threads": torch.get_num_threads(),
    }


def measure_peak(device_name: str, bf16: bool) -> dict[str, float]:
    """GFLOP/s of a large square matmul in fp32 (and bf16): the best of several calls.

    The best, not the median: it is the ceiling that the training FLOP/s are compared with,
    and on a shared machine a call can only be slowed down, never sped up.
    """
    import torch

    device = torch.device(device_name)
    n = PEAK_MATMUL_N.get(device.type, 2048)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not bf16:
            continue
        a, b, c = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(3))
        torch.mm(a, b, out=c)  # the first call sets up the BLAS kernels
        times = []
        for _ in range(8):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        peaks[name] = 2 * n**3 / min(times) / 1e9
    return peaks


def _worker_main(argv: list[str]) -> int:
    """``python -m alexnet.bench.train --worker SPEC``: one measurement, JSON on stdout."""
    spec = json.loads(argv[argv.index("--worker") + 1])
    if spec["kind"] == "peak":
        result: dict[str, Any] = measure_peak(spec["device"], spec["bf16"])
    else:
        cfg = Config(**spec["config"])
        result = measure_config(cfg, spec["batch_size"], spec["steps"], spec["warmup"], spec["device"])
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------
# Parent side.


def _in_fresh_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker spec in a new interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "alexnet.bench.train", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"benchmark worker failed ({spec.get('config', spec)}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    from alexnet.runtime import bf16_supported

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": bf16_supported(torch.device("cpu")),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


class OtherLoad:
    """How many CPUs' worth of time processes other than this run used while it ran (Linux).

    The machine's busy time from ``/proc/stat`` minus this process's and its children's CPU
    time. Other processes competing for the cores distort every number (threads wait for each
    other at every parallel region), the baseline's as much as ours, so the report says so.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is already in user):
        # busy = all but idle and iowait; steal counts, it is other VMs on our CPUs.
        tick, cpu = os.sysconf("SC_CLK_TCK"), fields[:8]
        busy = (sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)) / tick
        ours = sum(os.times()[:4])  # user + system, self and children
        return time.monotonic(), busy, ours

    def cpus(self) -> float | None:
        """Average number of CPUs that other processes kept busy since construction."""
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, other / (end[0] - self.start[0]))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alexnet bench train``."""
    p = sub.add_parser("train", help="training-step throughput: ours vs the usual fp32 loop", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default="alexnet", help="registered model to benchmark (default alexnet)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5; median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--configs", default=None, metavar="NAME,...",
                   help="measure only these configurations (baseline and ours are always measured); "
                        "default: all of " + ", ".join(CONFIG_NAMES))  # fmt: skip
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="instead of the table: data-parallel scaling of 'ours' under torchrun + DDP for 1, 2, "
                        "4, ... N processes (per-process and total img/s, efficiency; --batch-size is per "
                        "process); see alexnet/bench/scaling.py")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object (and nothing else) on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure every configuration and print the table (or JSON)."""
    from alexnet.runtime import resolve_device, resolve_precision

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.nproc is not None and args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    configs = build_configs(args.model, precision, device.type)
    if args.nproc is not None:
        return _run_scaling(args, configs, device.type)
    if args.configs:
        wanted = {name.strip() for name in args.configs.split(",") if name.strip()}
        unknown = sorted(wanted - set(CONFIG_NAMES))
        if unknown:
            raise UserError(f"unknown --configs {', '.join(unknown)}; choose from {', '.join(CONFIG_NAMES)}")
        configs = [c for c in configs if c.name in wanted | {"baseline", "ours"}]
    hw = hardware()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started, other_load = time.perf_counter(), OtherLoad()
    say(f"measuring the matmul peak on {device.type} ...")
    peak = _in_fresh_process({"kind": "peak", "device": str(device), "bf16": precision == "bf16"})
    results = []
    for cfg in configs:
        say(f"measuring {cfg.name}: {cfg.label} ...")
        spec = {"kind": "config", "config": asdict(cfg), "batch_size": args.batch_size, "steps": args.steps,
                "warmup": args.warmup, "device": str(device)}  # fmt: skip
        results.append(_in_fresh_process(spec))
    by_name = {r["name"]: r for r in results}
    base, ours = by_name["baseline"], by_name["ours"]
    for r in results:
        r["ratio"] = r["img_s"] / base["img_s"]
        r["peak_fraction"] = r["train_gflop_s"] / peak.get(r["precision"], peak["fp32"])
    summary = {
        "baseline_img_s": base["img_s"],
        "ours_img_s": ours["img_s"],
        "ratio": ours["img_s"] / base["img_s"],
        "ours_gflop_s": ours["train_gflop_s"],
        "ours_peak_fraction": ours["peak_fraction"],
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": str(device),
        "precision": precision,
        "peak_gflop_s": peak,
        "hardware": hw,
        "configs": results,
        "seconds": time.perf_counter() - started,
        "other_processes_cpus": other_load.cpus(),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    _print_table(summary)
    return 0


def _run_scaling(args: argparse.Namespace, configs: list[Config], device_type: str) -> int:
    """``--nproc N``: the scaling measurement of the ``ours`` configuration."""
    from alexnet.bench.scaling import measure_scaling, print_scaling

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
          f"{hw['cpu_capability']}, native bf16: {'yes' if hw['cpu_native_bf16'] else 'no'}"
          + (f", GPU {hw['gpu']}" if "gpu" in hw else "") + f"; torch {hw['torch']}")  # fmt: skip
    other = s["other_processes_cpus"]
    if other is not None and other >= 0.2:
        print(f"warning: other processes kept {other:.1f} of {hw['cpu_count']} CPUs busy during the run; "
              "timings are unreliable, rerun on an idle machine")  # fmt: skip
    print()
    width = max(len(r["label"]) for r in s["configs"]) + 12
    print(f"{'config':<{width}} {'img/s':>8} {'ms/step':>9} {'vs base':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for r in s["configs"]:
        print(f"{r['name'] + ': ' + r['label']:<{width}} {r['img_s']:>8.1f} {r['step_ms']:>9.0f} "
              f"{r['ratio']:>7.2f}x {r['train_gflop_s']:>8.1f} {100 * r['peak_fraction']:>7.1f}%")  # fmt: skip
    print()
    peak = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in s["peak_gflop_s"].items())
    ours = next(r for r in s["configs"] if r["name"] == "ours")
    print(f"matmul peak ({PEAK_MATMUL_N.get(s['device'].split(':')[0], 2048)}^3, same run): {peak}")
    print(f"ours: 3 x {ours['forward_flops_per_img'] / 1e9:.2f} GFLOP/image x {ours['img_s']:.1f} img/s = "
          f"{ours['train_gflop_s']:.0f} GFLOP/s = {100 * ours['peak_fraction']:.0f}% of the {ours['precision']} "
          f"matmul peak")  # fmt: skip
    print(f"ours vs baseline: {s['ratio']:.2f}x ({s['ours_img_s']:.1f} vs {s['baseline_img_s']:.1f} img/s); "
          f"took {s['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
