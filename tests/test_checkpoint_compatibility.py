"""Checkpoints without ``lrn_scope`` in their options (written before the option existed, when
the LRN crossed the towers) keep loading and resuming as trained (``all``); new ones name it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alexnet import models
from alexnet.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tests.helpers.interop import run_main

NARROW = {"widths": [8, 16, 16, 16, 8], "fc_width": 16}


def test_old_checkpoints_load_across_towers_new_ones_per_tower(tmp_path: Path) -> None:
    assert models.create("alexnet", 10, **NARROW).features.norm1.groups == 2  # the paper's default
    assert models.create("alexnet-small", 10).features.norm1.groups == 1  # unchanged
    from tests.helpers.interop import make_run

    run = make_run(tmp_path / "run", "alexnet", num_classes=10, options=NARROW)
    ckpt = run / "checkpoints" / "last.pt"
    assert read_checkpoint(ckpt).model_options["lrn_scope"] == "tower"  # written explicitly
    # The same file as an older alexnet wrote it: no lrn_scope.
    raw = torch.load(ckpt, weights_only=True)
    del raw["model_options"]["lrn_scope"]
    torch.save(raw, tmp_path / "old.pt")
    old = read_checkpoint(tmp_path / "old.pt")
    assert old.model_options["lrn_scope"] == "all"
    model = old.build_model()
    assert model.lrn_scope == "all" and model.features.norm1.groups == 1
    save_checkpoint(tmp_path / "resaved.pt", old)  # and it stays "all" when written again
    assert load_checkpoint(tmp_path / "resaved.pt")["model_options"]["lrn_scope"] == "all"


def test_resuming_an_old_run_keeps_its_lrn_scope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", "synthetic:classes=3,size=227,train=6,val=3", "--model", "alexnet", "--batch-size", "3",
            "--widths", "8,16,16,16,8", "--fc-width", "16", "--device", "cpu", "--precision", "fp32", "--no-progress",
            "--workers", "0"]  # fmt: skip
    code, _, err = run_main(capsys, *args, "--epochs", "1", "--out", str(run))
    assert code == 0, err
    last = run / "checkpoints" / "last.pt"
    raw = torch.load(last, weights_only=True)
    assert raw["model_options"]["lrn_scope"] == "tower"
    del raw["model_options"]["lrn_scope"]  # as a run trained before the option existed
    torch.save(raw, last)
    code, _, err = run_main(capsys, "train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert load_checkpoint(last)["model_options"]["lrn_scope"] == "all"  # resumed as it was trained
    assert json.loads((run / "config.json").read_text())["config"]["model_options"].get("lrn_scope") is None
