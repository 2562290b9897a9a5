"""scripts/device-check's CPU dry run (``--device cpu --quick``), so the GPU script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_device_check_cpu_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "device-check"), "--device", "cpu", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)  # fmt: skip
    report = json.loads(out.read_text())  # one JSON file with every part
    assert proc.returncode == 0, proc.stderr
    assert report["ok"] and report["device"] == "cpu" and report["quick"]
    parts = report["parts"]
    assert list(parts) == ["cuda-tests", "bench-train", "bench-data", "gpu-decode", "ddp", "train"]
    assert all(p["ok"] for p in parts.values()), {k: p.get("error") for k, p in parts.items()}
    assert "skipped" in parts["cuda-tests"]["summary"]  # no GPU here: collected, then skipped
    assert parts["bench-train"]["configs"]["ours"]["img_s"] > 0 and "vs_fp32_baseline" in parts["bench-train"]["comparisons"]
    assert parts["gpu-decode"]["img_s"] > 0 and parts["ddp"]["backend"] == "gloo" and parts["ddp"]["weights_moved"]
    losses = parts["train"]["train_loss_by_epoch"]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_device_check_fails_on_a_failing_part(tmp_path: Path) -> None:
    # A part that cannot succeed (gpu-decode without the prepared set bench-data makes) must
    # turn into a non-zero exit and ok: false in the JSON, not a crash.
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "device-check"), "--device", "cpu", "--quick",
                           "--parts", "gpu-decode", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1
    report = json.loads(out.read_text())
    assert not report["ok"] and "prepared" in report["parts"]["gpu-decode"]["error"]
