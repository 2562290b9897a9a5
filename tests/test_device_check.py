"""scripts/device-check's CPU dry run (``--device cpu --quick``), so the GPU script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import REPO


def test_device_check_cpu_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    every = ["cuda-tests", "bench-train", "bench-data", "gpu-decode", "ddp", "train", "paper-recipe"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "device-check"), "--device", "cpu", "--quick",
                           "--parts", ",".join(every), "--out", str(out)], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, check=False)  # fmt: skip
    report = json.loads(out.read_text())  # one JSON file with every part
    assert proc.returncode == 0, proc.stderr
    assert report["ok"] and report["device"] == "cpu" and report["quick"]
    parts = report["parts"]
    assert list(parts) == every
    assert all(p["ok"] for p in parts.values()), {k: p.get("error") for k, p in parts.items()}
    assert "skipped" in parts["cuda-tests"]["summary"]  # no GPU here: collected, then skipped
    # bench train's JSON as this script reads it (the suite's one run of `alexnet bench train`
    # on one process: the three configurations the GPU run compares).
    bench = parts["bench-train"]
    configs = bench["configs"]
    assert list(configs) == ["baseline", "ours", "lrn-function"]
    assert all(c["img_s"] > 0 and c["train_gflop_s"] > 0 for c in configs.values())
    assert bench["native_precision"].startswith(("bf16", "fp32 only")) and bench["peak_gflop_s"]["fp32"] > 0
    assert bench["ratio"] == pytest.approx(configs["ours"]["img_s"] / configs["baseline"]["img_s"])
    assert bench["comparisons"]["vs_fp32_baseline"] == pytest.approx(bench["ratio"])
    assert bench["comparisons"]["lrn_op_vs_former"] == pytest.approx(configs["ours"]["img_s"] / configs["lrn-function"]["img_s"])
    assert bench["other_processes_cpus"] >= 0
    assert parts["gpu-decode"]["img_s"] > 0 and parts["ddp"]["backend"] == "gloo" and parts["ddp"]["weights_moved"]
    losses = parts["train"]["train_loss_by_epoch"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # The paper net with the paper's recipe, through prepare at 256 px: 4 epochs of one step.
    paper = parts["paper-recipe"]
    assert paper["budget"] == "quick" and len(paper["val_top1_err_by_epoch"]) == 4
    assert all(r > 0 for r in paper["images_per_sec"]) and paper["seconds"] > 0


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
