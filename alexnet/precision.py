"""Which precision (fp32, or bf16 autocast) and memory layout a run uses: what this machine runs fastest.

Three CPU classes matter (:class:`CpuFlags`):

* ``avx2``: AVX2 only (most laptops, older servers). No bf16 instructions: oneDNN emulates
  bf16 by converting to fp32, slower than fp32 itself. ``auto`` -> fp32.
* ``avx512``: AVX512 without bf16 (Skylake-SP, Cascade Lake, Ice Lake: the most common cloud
  server). oneDNN still *reports* bf16 support (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``
  is true from avx512_core up) but emulates it: measured 0.59x of fp32 on alexnet-small.
  ``auto`` -> fp32.
* ``avx512-bf16``: avx512_bf16 without AMX (AMD Zen 4/5, Cooper Lake). Native bf16 dot
  products, yet whether they beat fp32 depends on the layers: the flags cannot decide, so a
  short measurement does (:func:`measure`).
* ``amx``: AMX tiles (Sapphire Rapids and later): bf16 matrix units, several times fp32's
  throughput. ``auto`` -> bf16.

The flags are PyTorch's own native checks (``torch.cpu._is_avx512_bf16_supported()``,
``torch.cpu._is_amx_tile_supported()``), capped by ``ONEDNN_MAX_CPU_ISA`` and
``ATEN_CPU_CAPABILITY``, so a machine restricted to a lower ISA (how the other classes are
emulated on one machine) is treated as that class.

The memory layout (channels_last or not) is measured on every class, alongside the precision
where the flags leave it open. A measurement times forward + backward of the run's own model's
convolutions (their real shapes, :func:`measure` says why only those) in each candidate
setting, alternating, for about a second; it is cached per CPU model, torch version, ISA limit,
thread count and model in the user's cache folder (``$ALEXNET_CACHE_DIR``, else
``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``). ``alexnet bench train --remeasure``
measures again and replaces the cached entry. docs/performance.md has the figures.

:func:`decide` is the decision: a pure function of the flags and the measurement, so each
class can be tested without its hardware. :func:`choose` gathers both (reading this machine,
the cache, or measuring) and applies what the user forced with ``--precision`` /
``--channels-last``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from alexnet.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")

# bf16 (or the non-default layout) must be this much faster than fp32 (channels_last) in the
# measurement to be chosen: fp32 is the exact format, channels_last the tested default, and a
# smaller difference is within a 2-core machine's run-to-run noise. It is also the tolerance of
# `alexnet bench train --check`.
MARGIN = 0.05

# The measurement: untimed first calls of every candidate (oneDNN creates its kernels), then
# alternating timed rounds until this many seconds have passed (at least MIN_ROUNDS rounds), and
# the fastest round of each (on a shared machine a round can only be slowed down). It runs on
# one thread and counts that thread's CPU time, not wall time: what is compared is the
# settings' cost per core, and on a machine whose cores other processes keep busy, wall time
# mostly measures waiting: several threads wait for each other at every layer
# (alexnet.runtime.busy_cores_warning), and one thread waits for its turn on a core. On the
# 2-core EPYC at load average 10, where alexnet-small trains 1.37x faster in bf16 than in fp32,
# bf16 measured 1.02x by two threads' wall time, 1.00-1.70x by one thread's, 1.30-1.61x by one
# thread's CPU time (three runs each).
MEASURE_SECONDS = 1.0
MIN_ROUNDS, MAX_ROUNDS = 2, 6
# Forward FLOPs of the convolutions per measured step: enough for the layers' real GEMM shapes
# (the paper net: 2 images, conv1 alone 2 x 3,025 output positions; alexnet-small: 32, the
# most MAX_MEASURE_BATCH allows), little enough that a step takes ~0.1 s on one core.
MEASURE_FLOPS = 2.7e9
MAX_MEASURE_BATCH = 32

# ONEDNN_MAX_CPU_ISA values (oneDNN's names, lower case) and the class each caps a machine at.
_ISA_CAP = {
    "sse41": "none", "avx": "none", "avx2": "avx2", "avx2_vnni": "avx2", "avx2_vnni_2": "avx2",
    "avx512_core": "avx512", "avx512_core_vnni": "avx512", "avx512_core_bf16": "avx512-bf16",
    "avx10_1_512": "avx512-bf16", "avx512_core_fp16": "avx512-bf16",
}  # fmt: skip
CLASSES = ("none", "avx2", "avx512", "avx512-bf16", "amx")
CLASS_WORDS = {
    "none": "no AVX2",
    "avx2": "AVX2 only",
    "avx512": "AVX512 without bf16",
    "avx512-bf16": "avx512_bf16 without AMX",
    "amx": "AMX",
}


@dataclass(frozen=True)
class CpuFlags:
    """What the CPU offers for convolutions and matmuls, as oneDNN may use it."""

    avx2: bool
    avx512: bool
    avx512_bf16: bool
    amx: bool
    isa_limit: str | None = None  # ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY, when they capped the flags

    @property
    def cpu_class(self) -> str:
        """One of :data:`CLASSES`."""
        if self.amx:
            return "amx"
        if self.avx512_bf16:
            return "avx512-bf16"
        return "avx512" if self.avx512 else "avx2" if self.avx2 else "none"

    @property
    def native_bf16(self) -> bool:
        """bf16 instructions in hardware (not oneDNN's conversion to fp32)."""
        return self.avx512_bf16 or self.amx

    def capped(self, cls: str) -> CpuFlags:
        """These flags, at most class ``cls`` (what an ISA limit leaves of them)."""
        rank = CLASSES.index(cls)
        return CpuFlags(self.avx2 and rank >= 1, self.avx512 and rank >= 2, self.avx512_bf16 and rank >= 3,
                        self.amx and rank >= 4, self.isa_limit)  # fmt: skip


def cpu_flags() -> CpuFlags:
    """This machine's :class:`CpuFlags`: PyTorch's native checks, capped by the ISA limits in the
    environment (``ONEDNN_MAX_CPU_ISA`` for oneDNN's kernels, ``ATEN_CPU_CAPABILITY`` for
    PyTorch's own, as ``torch.backends.cpu.get_cpu_capability()`` reports it)."""

    def check(name: str) -> bool:
        try:
            return bool(getattr(torch.cpu, name)())
        except (AttributeError, RuntimeError):
            return False

    flags = CpuFlags(check("_is_avx2_supported"), check("_is_avx512_supported"),
                     check("_is_avx512_bf16_supported"), check("_is_amx_tile_supported"))  # fmt: skip
    limits = []
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
    if onednn and onednn != "all":
        limits.append(f"ONEDNN_MAX_CPU_ISA={onednn.upper()}")
        flags = flags.capped(_ISA_CAP.get(onednn, "amx"))
    capability = torch.backends.cpu.get_cpu_capability().lower()  # "avx2", "avx512", "default", ...
    if capability in ("default", "avx2"):
        if flags.avx512:
            limits.append(f"ATEN_CPU_CAPABILITY={capability}")
        flags = flags.capped("avx2" if capability == "avx2" else "none")
    return CpuFlags(flags.avx2, flags.avx512, flags.avx512_bf16, flags.amx, ", ".join(limits) or None)


def candidates(flags: CpuFlags) -> tuple[tuple[str, bool], ...]:
    """The (precision, channels_last) settings a measurement times on a CPU with ``flags``:
    bf16 alone with AMX, fp32 alone without native bf16, both in between; each in both layouts."""
    precisions = ("bf16",) if flags.amx else ("fp32", "bf16") if flags.avx512_bf16 else ("fp32",)
    return tuple((p, cl) for p in precisions for cl in (True, False))


@dataclass(frozen=True)
class Timing:
    """The fastest measured forward + backward of one setting."""

    precision: str
    channels_last: bool
    seconds: float


@dataclass(frozen=True)
class Measurement:
    """Forward + backward of ``model``'s convolutional layers (``features``) on ``batch`` images in
    each candidate setting (why only those: :func:`measure`)."""

    model: str
    batch: int
    timings: tuple[Timing, ...]
    rounds: int = 0
    wall_seconds: float = 0.0  # the whole measurement, first calls included
    other_cpus: float | None = None  # CPUs other processes kept busy meanwhile (alexnet.runtime.OtherLoad)
    measured_at: str = ""  # UTC, ISO 8601

    def fastest(self, precision: str | None = None, channels_last: bool | None = None) -> float | None:
        """The shortest time among the settings with the given precision and layout (None: none measured)."""
        found = [t.seconds for t in self.timings if precision in (None, t.precision) and channels_last in (None, t.channels_last)]
        return min(found, default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(**{**d, "timings": tuple(Timing(**t) for t in d["timings"])})


@dataclass(frozen=True)
class Choice:
    """The precision and layout a run uses, and why (the log line and config.json say both)."""

    precision: str  # "fp32" | "bf16"
    channels_last: bool
    reason: str  # a few words: "this CPU emulates bf16 (measured 0.59x)"
    cpu_class: str | None = None  # one of CLASSES (None on a GPU)
    bf16_vs_fp32: float | None = None  # measured throughput ratio, when both were timed
    channels_last_vs_not: float | None = None  # measured in the chosen precision, when both were timed
    measurement: Measurement | None = None
    cached: bool = False  # the measurement came from the cache
    forced: tuple[str, ...] = field(default_factory=tuple)  # "precision" / "channels_last" given by the user

    def describe(self) -> str:
        """The log line: ``fp32, channels_last: this CPU emulates bf16 (measured 0.59x)``."""
        layout = "channels_last" if self.channels_last else "contiguous (NCHW)"
        words = [self.reason]
        if self.channels_last_vs_not is not None and "channels_last" not in self.forced:
            words.append(f"channels_last measured {self.channels_last_vs_not:.2f}x contiguous")
        m = self.measurement
        if m is not None:
            busy = f", {m.other_cpus:.1f} other CPUs busy" if m.other_cpus is not None and m.other_cpus >= 0.5 else ""
            when = f"cached, measured {m.measured_at}" if self.cached else f"measured now in {m.wall_seconds:.1f} s"
            words.append(f"{when} on {m.model}'s convolutions, batch {m.batch}, 1 thread{busy}")
        return f"{self.precision}, {layout}: " + "; ".join(words)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["log"] = self.describe()
        return d


def _ratio(slow: float | None, fast: float | None) -> float | None:
    """Throughput of the ``fast`` setting relative to the ``slow`` one (a time ratio), when both exist."""
    return slow / fast if slow is not None and fast is not None and fast > 0 else None


def decide(flags: CpuFlags, measurement: Measurement | None, precision: str = "auto",
           channels_last: bool | None = None) -> Choice:  # fmt: skip
    """The precision and layout for a CPU with ``flags``, given what was measured (pure).

    ``precision`` / ``channels_last``: what the user forced (``"auto"`` / ``None``: decide).
    bf16 is chosen only where a measurement shows it at least :data:`MARGIN` faster than fp32,
    or, unmeasured, where the CPU has AMX; without native bf16 no setting is measured in bf16,
    so an unmeasured or unfavourable bf16 never wins. channels_last stays unless the measurement
    shows the contiguous layout :data:`MARGIN` faster in the chosen precision.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cls, m = flags.cpu_class, measurement
    limit = f", {flags.isa_limit}" if flags.isa_limit else ""
    forced = tuple(name for name, given in (("precision", precision != "auto"), ("channels_last", channels_last is not None))
                   if given)  # fmt: skip
    fp32, bf16 = (m.fastest(p) if m else None for p in ("fp32", "bf16"))
    ratio = _ratio(fp32, bf16)
    if precision != "auto":
        chosen, reason = precision, f"{precision} as asked ({CLASS_WORDS[cls]}{limit})"
    elif ratio is not None:  # both timed: the measurement decides
        chosen = "bf16" if ratio >= 1 + MARGIN else "fp32"
        verb = "runs bf16 faster" if chosen == "bf16" else "runs bf16 no faster" if ratio >= 1 else "runs bf16 slower"
        reason = f"this CPU ({CLASS_WORDS[cls]}{limit}) {verb} (measured {ratio:.2f}x fp32)"
    elif flags.amx:
        chosen, reason = "bf16", f"native bf16 matrix units (AMX{limit})"
    elif flags.avx512_bf16:  # could not measure: fp32, the exact format, never slower than emulation
        chosen, reason = "fp32", f"bf16 unmeasured on this CPU ({CLASS_WORDS[cls]}{limit})"
    else:
        chosen, reason = "fp32", f"this CPU emulates bf16 ({CLASS_WORDS[cls]}{limit}: no native bf16)"
    cl_time, nchw_time = (m.fastest(chosen, v) if m else None for v in (True, False))
    cl_ratio = _ratio(nchw_time, cl_time)
    if channels_last is not None:
        layout = channels_last
    else:
        layout = not (cl_ratio is not None and cl_ratio < 1 / (1 + MARGIN))
    return Choice(chosen, layout, reason, cls, ratio, cl_ratio, m, forced=forced)


# --------------------------------------------------------------------------------------------
# The measurement and its cache.


def cache_dir() -> Path:
    """The user's cache folder for alexnet (``$ALEXNET_CACHE_DIR``, ``$XDG_CACHE_HOME/alexnet``
    or ``~/.cache/alexnet``)."""
    if os.environ.get("ALEXNET_CACHE_DIR"):
        return Path(os.environ["ALEXNET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alexnet"


def cache_key(model: str) -> dict[str, Any]:
    """What a measurement depends on: the CPU model, torch, the ISA limits, threads and the model."""
    from alexnet.runtime import cpu_name

    return {
        "cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(), "model": model,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }  # fmt: skip


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "precision" / f"{key['model']}-{digest}.json"


def read_cached(key: dict[str, Any]) -> Measurement | None:
    """The cached measurement for ``key``, or None (missing, unreadable, or for other candidates)."""
    try:
        d = json.loads(cache_path(key).read_text())
        if d.get("key") != key:
            return None
        return Measurement.from_dict(d["measurement"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached(key: dict[str, Any], m: Measurement) -> None:
    """Store ``m`` for ``key``; a cache that cannot be written only costs a measurement next time."""
    from alexnet.io import atomic_write_json

    try:
        atomic_write_json(cache_path(key), {"key": key, "measurement": m.to_dict()})
    except OSError:
        pass


def measure(model: str, settings: tuple[tuple[str, bool], ...], seconds: float = MEASURE_SECONDS) -> Measurement:
    """Time forward + backward of ``model``'s convolutional layers (its default options) in each
    (precision, channels_last) setting on the CPU, in one thread's CPU time: first calls untimed, then
    alternating rounds for about ``seconds``.

    The convolutions (with their LRN and pooling) are 89-92% of both nets' FLOPs. The fully
    connected layers are left out because at a measurable batch of one or two images they are
    not what a training batch makes of them: reading the weights and casting all 59M of them to
    bf16 dominates, which a batch of 128 amortises (the whole paper net at one image measured
    bf16 at 0.51x fp32 on a CPU where a batch of 64 trains 1.78x faster).
    """
    from alexnet import models
    from alexnet.runtime import OtherLoad

    started, load, threads = time.perf_counter(), OtherLoad(), torch.get_num_threads()
    info = models.info(model)
    torch.set_num_threads(1)
    try:  # a backward pass, whatever the caller's mode (predict and serve decide under no_grad)
        with torch.inference_mode(False), torch.enable_grad():
            return _measure(model, info, settings, seconds, started, load)
    finally:
        torch.set_num_threads(threads)


def _measure(model: str, info: Any, settings: tuple[tuple[str, bool], ...], seconds: float, started: float,
             load: Any) -> Measurement:  # fmt: skip
    from alexnet import models

    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(0)
        net = models.create(model, 1000 if info.image_size >= 200 else 10).train()
        layers = getattr(net, "features", net)
        in_channels = next(m for m in layers.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
        side = info.image_size
        batch = max(1, min(MAX_MEASURE_BATCH, round(MEASURE_FLOPS / max(1, _forward_flops(layers, in_channels, side)))))
        x = torch.randn(batch, in_channels, side, side)

        def step(precision: str, channels_last: bool) -> float:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            layers.to(memory_format=fmt)
            xs = x.contiguous(memory_format=fmt)
            t0 = time.thread_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = layers(xs)
            out.float().square().mean().backward()
            elapsed = time.thread_time() - t0
            layers.zero_grad(set_to_none=True)
            return elapsed

        for s in settings:
            step(*s)
        best = dict.fromkeys(settings, float("inf"))
        rounds, t_rounds = 0, time.perf_counter()
        while rounds < MAX_ROUNDS and (rounds < MIN_ROUNDS or time.perf_counter() - t_rounds < seconds):
            for s in settings if rounds % 2 == 0 else settings[::-1]:  # no setting always goes first
                best[s] = min(best[s], step(*s))
            rounds += 1
    return Measurement(model, batch, tuple(Timing(p, cl, round(t, 6)) for (p, cl), t in best.items()), rounds,
                       round(time.perf_counter() - started, 3), load.cpus(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # fmt: skip


def _forward_flops(layers: torch.nn.Module, in_channels: int, side: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        layers(torch.zeros(1, in_channels, side, side))
    return int(counter.get_total_flops())


def measured(model: str, flags: CpuFlags, refresh: bool = False) -> tuple[Measurement, bool]:
    """The measurement for ``model`` on this machine, and whether it came from the cache
    (``refresh``: measure again and replace the cached one)."""
    key = {**cache_key(model), "settings": [list(s) for s in candidates(flags)]}
    if not refresh and (m := read_cached(key)) is not None:
        return m, True
    m = measure(model, candidates(flags))
    write_cached(key, m)
    return m, False


def choose(precision: str = "auto", channels_last: bool | None = None, device: torch.device | None = None,
           model: str | None = None, refresh: bool = False) -> Choice:  # fmt: skip
    """The :class:`Choice` for a run of ``model`` on ``device`` (default CPU).

    ``precision`` / ``channels_last`` force a setting (``"auto"`` / ``None``: this machine's
    fastest). On a CPU, whatever is left open is decided by :func:`decide` from the flags and the
    (cached) measurement of ``model``; without a model, by the flags alone. On CUDA: bf16 where
    the GPU supports it, and channels_last.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = device or torch.device("cpu")
    forced = tuple(n for n, given in (("precision", precision != "auto"), ("channels_last", channels_last is not None)) if given)
    if device.type != "cpu":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        chosen = precision if precision != "auto" else "bf16" if bf16 else "fp32"
        why = "as asked" if precision != "auto" else "this GPU runs bf16 natively" if bf16 else "this GPU has no bf16"
        return Choice(chosen, True if channels_last is None else channels_last, why, forced=forced)
    flags = cpu_flags()
    if len(forced) == 2 or model is None:
        return decide(flags, None, precision, channels_last)
    m, cached = measured(model, flags, refresh)
    return replace(decide(flags, m, precision, channels_last), cached=cached)


def resolve_precision(name: str, device: torch.device, model: str | None = None) -> str:
    """``auto`` -> what runs ``model`` fastest on ``device``: :func:`choose`
    (bf16 only where the hardware runs it natively and, where the flags cannot tell, faster).
    A precision given by name is returned as it is, with nothing measured."""
    if name in ("fp32", "bf16"):
        return name
    return choose(name, None, device, model).precision
