"""Device, precision and process-level settings shared by training, evaluation and benchmarks.

Also the one place that asks the machine about itself: how many cores this process may use
(:func:`available_cores`, :func:`default_workers`) and what the CPU is called (:func:`cpu_name`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from alexnet.errors import UserError

DEVICES = ("auto", "cpu", "cuda")

# Loader threads beyond this rarely help: one training step consumes the batches of a few
# decoding threads (docs/pipeline.md), and each thread holds a batch in memory.
MAX_DEFAULT_WORKERS = 8

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_allocator_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed heap memory for reuse instead of returning it to the OS (glibc only).

    PyTorch's CPU allocator is plain ``malloc``; glibc serves each large tensor with a fresh
    ``mmap`` and unmaps it on free, so every activation of every step is page-faulted in again.
    On the 2-core reference machine that is 20-30% of an AlexNet training step (measured with
    ``alexnet bench train``). Turning off mmap for large blocks and heap trimming makes the
    second step reuse the first step's pages; peak memory is unchanged. Returns whether the
    setting was applied (it is a no-op off glibc).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``precision == 'bf16'``, else nothing."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def fast_sgd_options(device: torch.device) -> dict[str, bool]:
    """Keyword arguments that pick the fastest ``torch.optim.SGD`` implementation on ``device``.

    ``fused=True`` where PyTorch has a fused SGD kernel for the device (CPU and CUDA in recent
    releases): one pass over weights, gradients and momentum buffers instead of three. The step
    is memory-bound (61M parameters for the paper net): on the 2-core reference machine, one
    thread, fused 35 ms vs foreach 96 ms vs per-parameter 98 ms. Otherwise ``foreach=True``.
    """
    try:
        p = torch.zeros(1, device=device, requires_grad=True)
        p.grad = torch.zeros_like(p)
        torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True).step()
        return {"fused": True}
    except (RuntimeError, ValueError, TypeError):
        return {"foreach": True}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under ``taskset``/cgroups)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class OtherLoad:
    """How many CPUs' worth of time processes other than this run used while it ran (Linux).

    The machine's busy time from ``/proc/stat`` minus this process's and its children's CPU
    time. Other processes competing for the cores distort every number (threads wait for each
    other at every parallel region): ``alexnet bench train`` reports it beside its numbers, and
    the trainer warns after its first epoch (:func:`busy_cores_warning`).
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


def busy_cores_warning(other_cpus: float | None, threads: int, cpus: int) -> str | None:
    """One line when other processes kept so many of the machine's ``cpus`` busy that this
    process's ``threads`` OpenMP threads cannot all run at once (``None`` otherwise).

    Threads that share busy cores wait for each other at every parallel region: on 2 cores,
    beside two busy loops, two threads trained at 26 img/s where one thread made 492
    (docs/RESULTS.md). The thread count is not changed for the user: it changes the order of float
    sums, and a run and its resume keep one count to stay bit-exact.
    """
    if other_cpus is None or threads < 2 or other_cpus + threads <= cpus + 0.5:
        return None
    suggest = max(1, cpus - round(other_cpus))
    return (
        f"warning: other processes kept {other_cpus:.1f} of this machine's {cpus} CPUs busy during the first epoch, "
        f"so its {threads} OpenMP threads wait for each other at every layer (on busy cores that can be 20x slower "
        f"than fewer threads). The run goes on; if the machine stays this busy, start it again with "
        f"OMP_NUM_THREADS={suggest}"
    )


def default_workers(limit: int | None = MAX_DEFAULT_WORKERS) -> int:
    """The default number of decoding threads: one per available core, at most ``limit``
    (``None``: no limit, for ``prepare``, whose work grows with the cores)."""
    cores = available_cores()
    return cores if limit is None else min(cores, limit)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
