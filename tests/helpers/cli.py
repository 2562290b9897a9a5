"""Running ``alexnet`` in the tests: in-process or as a real subprocess, and the one-line error check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
HAS_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").exists() or (FASHION_DIR / "train-images-idx3-ubyte").exists()
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not installed (make data)")


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m alexnet ARGS`` in a fresh process; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "alexnet", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def cli_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``alexnet ARGS`` in this process (``alexnet.cli.main``); (exit code, stdout, stderr)."""
    from alexnet.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(proc: subprocess.CompletedProcess[str] | tuple[int, str], fragment: str = "") -> None:
    """Exit code 2, exactly one non-empty stderr line, no traceback."""
    code, err = (proc.returncode, proc.stderr) if not isinstance(proc, tuple) else proc
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
