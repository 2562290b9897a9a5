"""The measurement behind ``alexnet bench train``: one training step of one configuration.

Each configuration runs in a fresh ``python -m alexnet.bench.step --worker SPEC`` process, so
allocator settings, thread pools, oneDNN and compile caches cannot leak from one into the next.
A step is the trainer's own :func:`~alexnet.training.loop.train_step` (forward, backward, SGD)
on a fixed random batch at the model's input size with 1000 classes; warm-up steps are excluded
and the median of the timed steps is reported.

Configurations (``CONFIG_NAMES``):

* ``baseline``: ``torchvision.models.alexnet()`` in the usual fp32 loop with PyTorch's defaults
  (NCHW, default allocator, per-parameter SGD). For models whose input is smaller than
  torchvision's 224 px, the same model in that usual loop instead.
* ``ours``: the requested model as the trainer runs it: the precision and layout ``auto``
  picks on this machine (:mod:`alexnet.precision`; bf16 autocast only where the hardware runs
  it natively and faster, channels_last unless measured slower),
  :func:`alexnet.runtime.tune_cpu_allocator` (CPU) or cuDNN autotuning (CUDA), and the trainer's
  optimizer (:func:`alexnet.training.build.make_optimizer`, fused SGD, paper recipe).
* ``torchvision``: torchvision's alexnet with exactly ``ours``' settings, precision included
  (the fair comparison; 224 px models only).
* ``ours-fp32`` / ``ours-bf16``: ``ours`` in the precision ``auto`` did not pick (``alexnet
  bench train`` shows both beside auto's choice, and ``--check`` fails when auto's is slower).
* ``torch-lrn``: the naive faithful net: ``ours`` with ``torch.nn.LocalResponseNorm``.
* ``lrn-function``: ``ours`` with the LRN's former implementation (the same blocked kernels as
  an autograd.Function instead of the ``alexnet::lrn`` custom op): the before/after of the op.
* ``no-lrn``: ``ours`` without LRN, to show what LRN still costs.
* ``ours-compiled`` / ``torchvision-compiled``: ``ours`` / ``torchvision`` under
  ``torch.compile`` (measured by default on CUDA only: compiling takes minutes on a small CPU).

FLOP/s: training FLOPs per image are taken as 3x the forward FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls), and compared with a
large-matmul peak measured in the same run, MFU-style.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

# Matmul size for the peak measurement: large enough to reach the BLAS plateau, small enough to
# take well under a second per call on a 2-core CPU.
PEAK_MATMUL_N = {"cpu": 2048, "cuda": 8192}

CONFIG_NAMES = ("baseline", "ours", "torchvision", "ours-fp32", "ours-bf16", "torch-lrn", "lrn-function", "no-lrn",
                "ours-compiled", "torchvision-compiled")  # fmt: skip
# Measured only when asked for (--configs) on a CPU: Inductor's C++ compile takes minutes there.
CUDA_ONLY_BY_DEFAULT = ("ours-compiled", "torchvision-compiled")


@dataclass(frozen=True)
class Config:
    """One measured configuration (serialised to the worker process as JSON)."""

    name: str
    label: str
    model: str  # a registry name, or "torchvision" for torchvision.models.alexnet()
    precision: str  # "fp32" | "bf16"
    channels_last: bool
    tuned: bool  # our runtime settings: tune_cpu_allocator() on CPU, cudnn.benchmark on CUDA
    optimizer: str  # "default" (PyTorch's per-parameter SGD) | "trainer" (make_optimizer)
    lrn: str = "ours"  # "ours" | "function" | "torch" | "off"
    compiled: bool = False


def build_configs(model: str, precision: str, device_type: str, channels_last: bool = True) -> list[Config]:
    """Every configuration that applies to ``model`` (see the module docstring), in table order:
    ``ours`` in ``precision`` and layout ``channels_last`` (what ``auto`` picked)."""
    from alexnet import models

    info = models.info(model)  # UserError for an unknown name
    has_lrn = "lrn" in models.model_options(model)
    # torchvision's alexnet needs >= ~63 px input; for the 28 px model the usual loop runs it.
    usual = "torchvision" if info.image_size >= 224 else model
    dtype = f"{precision} autocast" if precision != "fp32" else "fp32"
    layout = "channels_last" if channels_last else "NCHW"
    ours = Config("ours", f"{model}, {dtype}, {layout}, tuned runtime, trainer's SGD",
                  model, precision, channels_last, True, "trainer")  # fmt: skip
    configs = [
        Config("baseline", f"{'torchvision alexnet' if usual == 'torchvision' else model}, fp32, PyTorch defaults",
               usual, "fp32", False, False, "default"),
        ours,
    ]  # fmt: skip
    tv = replace(ours, name="torchvision", label=f"torchvision alexnet, same settings as ours ({dtype})", model="torchvision")
    if usual == "torchvision":
        configs.append(tv)
    other = "bf16" if precision == "fp32" else "fp32"
    other_dtype = "bf16 autocast" if other == "bf16" else "fp32"
    configs.append(replace(ours, name=f"ours-{other}", label=ours.label.replace(dtype, other_dtype), precision=other))
    if has_lrn:
        configs += [
            replace(ours, name="torch-lrn", label="naive faithful net: ours with torch.nn.LocalResponseNorm", lrn="torch"),
            replace(ours, name="lrn-function", label="ours, former LRN path (autograd.Function, not the custom op)",
                    lrn="function"),
            replace(ours, name="no-lrn", label="ours without LRN (lrn=False)", lrn="off"),
        ]  # fmt: skip
    configs.append(replace(ours, name="ours-compiled", label=ours.label + ", torch.compile", compiled=True))
    if usual == "torchvision":
        configs.append(replace(tv, name="torchvision-compiled", label=tv.label + ", torch.compile", compiled=True))
    if device_type != "cuda":
        configs = [c for c in configs if c.name not in CUDA_ONLY_BY_DEFAULT]
    return configs


def compile_configs(model: str, precision: str) -> list[Config]:
    """The compiled configurations for ``model`` (asked for by name on a CPU)."""
    return [c for c in build_configs(model, precision, "cuda") if c.name in CUDA_ONLY_BY_DEFAULT]


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
            parts = x.float().chunk(ours.groups, 1)  # ours.groups: per-tower LRN (lrn_scope="tower")
            return torch.cat([self.lrn(p) for p in parts], 1).to(x.dtype)

    return TorchLRN()


def _build_model(cfg: Config) -> tuple[Any, int, int]:
    """(model, input side, input channels) for ``cfg``."""
    from alexnet import models

    if cfg.model == "torchvision":
        import torchvision

        return torchvision.models.alexnet(num_classes=1000), 224, 3
    options = {"lrn": False} if cfg.lrn == "off" else {}
    model = models.create(cfg.model, 1000, **options)
    if cfg.lrn == "torch":
        model.features.norm1 = _torch_lrn(model.features.norm1)
        model.features.norm2 = _torch_lrn(model.features.norm2)
    elif cfg.lrn == "function":
        model.features.norm1.impl = model.features.norm2.impl = "function"
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


def _optimizer(cfg: Config, model: Any, device: Any) -> Any:
    """PyTorch's per-parameter SGD (the usual loop) or the trainer's, both with the paper's
    momentum 0.9, weight decay 5e-4 and lr 0.01 (section 5)."""
    import torch

    from alexnet.training.recipes import PAPER

    if cfg.optimizer == "default":
        return torch.optim.SGD(model.parameters(), lr=PAPER.lr, momentum=PAPER.momentum, weight_decay=PAPER.weight_decay)
    from alexnet.training.build import make_optimizer

    return make_optimizer(model, PAPER, PAPER.lr, device)


def measure_config(cfg: Config, batch_size: int, steps: int, warmup: int, device_name: str,
                   distributed: bool = False) -> dict[str, Any]:  # fmt: skip
    """Time ``steps`` training steps of ``cfg`` after ``warmup`` untimed ones (this process).

    ``distributed``: wrap the model in ``DistributedDataParallel`` (the process group must be
    initialised), as the trainer does under torchrun. A compiled configuration always gets at
    least one warm-up step (the one that compiles), timed separately as ``compile_s``.
    """
    import torch

    from alexnet.models import count_parameters
    from alexnet.runtime import tune_cpu_allocator
    from alexnet.training.loop import train_step

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
    net = model
    if distributed:
        from alexnet.training.distributed import data_parallel

        net = data_parallel(model, device)
    if cfg.compiled:
        net = torch.compile(net)
    opt = _optimizer(cfg, model, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed_step() -> float:
        sync()
        t0 = time.perf_counter()
        train_step(net, opt, x, y, cfg.precision)
        sync()
        return time.perf_counter() - t0

    compile_s = timed_step() if cfg.compiled else None
    for _ in range(warmup - (1 if cfg.compiled else 0)):
        timed_step()
    times = [timed_step() for _ in range(steps)]
    median = statistics.median(times)
    return {
        **asdict(cfg),
        "img_s": batch_size / median,
        "step_ms": median * 1e3,
        "steps_ms": [round(t * 1e3, 2) for t in times],
        "compile_s": compile_s,
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
    """``python -m alexnet.bench.step --worker SPEC``: one measurement, JSON on stdout."""
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


def in_fresh_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker spec in a new interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "alexnet.bench.step", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"benchmark worker failed ({spec.get('config', spec)}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def native_precision(device_type: str) -> str:
    """What this machine runs natively, in words (for the report)."""
    import torch

    from alexnet.precision import CLASS_WORDS, cpu_flags

    if device_type == "cuda":
        return "bf16 (CUDA)" if torch.cuda.is_bf16_supported() else "fp32 only (this GPU has no bf16)"
    flags = cpu_flags()
    words = CLASS_WORDS[flags.cpu_class] + (f", {flags.isa_limit}" if flags.isa_limit else "")
    if flags.native_bf16:
        return f"bf16 (native bf16 instructions: {words})"
    return f"fp32 only ({words}: no native bf16; oneDNN would emulate it, slower than fp32)"


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    from alexnet.precision import cpu_flags

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
        "cpu_native_bf16": cpu_flags().native_bf16,
        "cpu_class": cpu_flags().cpu_class,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
