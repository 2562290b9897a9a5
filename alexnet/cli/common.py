"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from alexnet.precision import PRECISIONS
from alexnet.runtime import DEVICES


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``1/0``, ``on/off`` (for overridable boolean fields)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1, as an argparse type."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An int >= 0, as an argparse type."""
    return _int_at_least(text, 0)


def png_file(text: str) -> str:
    """A path ending in ``.png``, as an argparse type (figures are written as PNG only)."""
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"must be a .png file, got {text!r}")
    return text


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low..high`` (``--port``: 1..65535)."""

    def parse(text: str) -> int:
        value = _int_at_least(text, low)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected a number from {low} to {high}, got {value}")
        return value

    return parse


def finite_float(text: str) -> float:
    """A finite number, as an argparse type: ``nan``, ``inf`` and words are refused, in one line."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        value = finite_float(text)
        if value < low or value > high or (low_open and value == low):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text}")
        return value

    return parse


def int_list(text: str) -> list[int]:
    """Comma-separated whole numbers (``32,128,192,192,128``), as an argparse type."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def add_runtime_options(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--device and --precision (``default=None`` lets a resumed run keep its own)."""
    p.add_argument("--device", choices=DEVICES, default=default, help="auto: CUDA if available, else CPU")
    p.add_argument(
        "--precision", choices=PRECISIONS, default=default,
        help="auto: bf16 autocast where the hardware runs it natively and faster (CUDA, AMX CPUs; measured once "
             "on avx512_bf16 CPUs without AMX), else fp32 (see docs/performance.md)",
    )  # fmt: skip


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal (a log file gets no carriage-return frames) and not with
    ``--no-progress``."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()
