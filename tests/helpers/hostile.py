"""Shared by the hostile-input tests: one-line error checks, folder snapshots, a run folder to
attack, and child processes under a memory limit that report their peak RSS."""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from alexnet import models
from alexnet.data.convention import InputConvention, InputNorm
from alexnet.interop.runs import write_run

REPO = Path(__file__).resolve().parent.parent.parent
MEMORY_LIMIT = 6 << 30  # address space of a child: torch maps ~3 GB of it before any work
BOUNDED_RSS = 1 << 30  # what a hostile file may cost (the target: under 1 GB)


def one_line_error(result: tuple[int, str, str] | subprocess.CompletedProcess[str], fragment: str) -> str:
    code, err = (result.returncode, result.stderr) if isinstance(result, subprocess.CompletedProcess) else (result[0], result[2])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (the lock file aside) and a hash of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".alexnet.lock"
    }  # fmt: skip


def make_run(out: Path, num_classes: int = 4) -> Path:
    """A run folder of a fresh alexnet-small (RGB, 32 px images, 28 px crops), as `import` writes one."""
    torch.manual_seed(0)
    norm = InputNorm((120.0, 115.0, 100.0), (60.0, 58.0, 62.0))
    write_run(out, models.create("alexnet-small", num_classes), "alexnet-small", {}, [f"c{i}" for i in range(num_classes)],
              InputConvention(3, 32, 28, norm), "test", {"from": "tests"})  # fmt: skip
    return out


def child(code: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Python ``code`` in a child process under :data:`MEMORY_LIMIT`; it prints its peak RSS
    (bytes) as the last line of stdout."""
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a pytest
    # process that has grown to GBs over the suite would report the parent's size.
    peak = ("\nprint(next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')))\n")
    wrapped = textwrap.dedent(code) + peak

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          preexec_fn=limit, check=False, **kwargs)  # type: ignore[call-overload]  # fmt: skip


def peak_rss(proc: subprocess.CompletedProcess[str]) -> int:
    return int(proc.stdout.strip().splitlines()[-1])


def apply_edits(d: dict[str, Any], edits: Iterable[tuple[str, object]]) -> dict[str, Any]:
    """``d`` with each ``(name, value)`` of ``edits`` set in place: ``name`` is a key, or
    ``key.subkey`` (set where ``d[key]`` is a dict). For fuzzing stored records field by field."""
    for name, value in edits:
        head, _, tail = name.partition(".")
        if not tail:
            d[head] = value
        elif isinstance(d.get(head), dict):
            d[head][tail] = value
    return d
