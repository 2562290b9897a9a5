"""The run folder's one reader: what kind of run a folder holds, told from the files that
``alexnet train``, ``import`` and ``baseline`` really write, and its config and metrics read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnet.baselines import BaselineConfig, fit_baseline
from alexnet.errors import UserError
from alexnet.runfolder import (
    BASELINE,
    IMPORTED,
    NETWORK,
    last_checkpoint,
    read_config,
    read_metrics,
    run_kind,
    write_config,
    write_metrics,
)
from tests.helpers.cli import cli_main
from tests.helpers.interop import make_run

SYN = "synthetic:classes=3,size=28,train=48,val=16,channels=1"


def test_a_trained_run_is_a_network_and_its_metrics_are_its_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, _, err = cli_main(capsys, "train", "--data", SYN, "--widths", "8,16,24,24,16", "--fc-width", "32",
                            "--batch-size", "16", "--epochs", "2", "--no-progress", "--out", str(run))  # fmt: skip
    assert code == 0, err
    assert run_kind(run) == NETWORK
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    config = read_config(run)
    assert config is not None and config["config"]["recipe"]["epochs"] == 2
    last_checkpoint(run).unlink()  # no checkpoint: nothing to open yet
    assert run_kind(run) is None


def test_an_imported_and_a_baseline_run_are_told_apart(tmp_path: Path) -> None:
    imported = make_run(tmp_path / "imported")
    assert run_kind(imported) == IMPORTED
    baseline = tmp_path / "baseline"
    metrics = fit_baseline(BaselineConfig(data=SYN, features="raw", max_iter=20), baseline, progress=False)
    assert run_kind(baseline) == BASELINE
    assert read_metrics(baseline) == [metrics]


def test_what_is_not_a_run_is_none_and_a_damaged_config_one_line(tmp_path: Path) -> None:
    assert run_kind(tmp_path / "missing") is None and run_kind(tmp_path) is None
    (tmp_path / "file").write_text("x")
    assert run_kind(tmp_path / "file") is None
    assert read_config(tmp_path) is None and read_metrics(tmp_path) == []
    (tmp_path / "config.json").write_text("{not json")
    assert run_kind(tmp_path) is None
    with pytest.raises(UserError, match="config.json cannot be read"):
        read_config(tmp_path)
    write_config(tmp_path, {"kind": "x"})
    assert read_config(tmp_path) == {"kind": "x"}
    write_metrics(tmp_path, [{"epoch": 1}, {"epoch": 2}])
    assert read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
