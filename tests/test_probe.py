"""`alexnet probe`: linear SVMs on each layer's activations, against a direct fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet.baselines.probe import ProbeConfig, pooled_side, probe, probe_path
from alexnet.baselines.svm import LinearSVM, SvmParams
from alexnet.cli import main
from alexnet.data import BatchPlan
from alexnet.evaluation.features import open_session
from alexnet.runfolder import BASELINE_KIND
from tests.helpers.cli import assert_one_line_error, cli_main

SYN = "synthetic:classes=3,size=28,train=48,val=30,channels=1"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("probe") / "run"
    assert main(["train", "--data", SYN, "--epochs", "1", "--batch-size", "8", "--lr", "0.01", "--precision", "fp32",
                 "--no-progress", "--out", str(run)]) == 0  # fmt: skip
    return run


def test_pooled_side_keeps_each_probe_within_its_budget() -> None:
    assert pooled_side(96, 55, 4096) == 6  # the paper net's conv1: 96 x 6 x 6 = 3456 inputs
    assert pooled_side(256, 13, 4096) == 4  # conv5: 256 x 4 x 4
    assert pooled_side(32, 28, 4096) == 11 and pooled_side(96, 6, 4096) == 6  # never finer than the map
    assert pooled_side(5000, 3, 4096) == 1


def test_probe_equals_a_direct_fit(tiny_run: Path) -> None:
    session = open_session(tiny_run, precision_name="fp32")
    cfg = ProbeConfig(layers=("conv2", "fc7"), train_images=0, max_iter=60, batch_size=16)
    result = probe(session, cfg, progress=False, log=lambda _: None)
    assert [r.name for r in result.rows] == ["conv2", "fc7", "hog", "pixels"]
    assert result.train_images == 48 and result.val_images == 30
    # By hand: conv2's output after its ReLU, average-pooled to the budget's grid, same image order.
    model = session.loaded.model.eval()
    conv2 = model.layers_by_role()["conv2"]

    def conv2_features(split: str, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for images, labels in session.dataset.batches(split, BatchPlan(16, shuffle=shuffle, seed=0)):
            got: list[torch.Tensor] = []
            h = conv2.register_forward_hook(lambda _m, _i, o, got=got: got.append(o.relu()))
            with torch.no_grad():
                model(session.pipeline.eval(images))
            h.remove()
            side = pooled_side(got[0].shape[1], got[0].shape[-1], cfg.max_dims)
            xs.append(F.adaptive_avg_pool2d(got[0], side).flatten(1).half().float().numpy())  # stored as float16
            ys.append(labels.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = conv2_features("train", True)
    x_val, y_val = conv2_features("val", False)
    svm = LinearSVM(SvmParams(max_iter=60)).fit(x_train, y_train, 3)
    row = result.rows[0]
    assert row.dims == x_train.shape[1] == 64 * 5 * 5 and row.shape == "64x5x5 (pooled from 64x13x13)"
    assert row.train_acc == pytest.approx(float((svm.predict(x_train).numpy() == y_train).mean()))
    assert row.test_acc == pytest.approx(float((svm.predict(x_val).numpy() == y_val).mean()))


def test_probe_runs_hog_in_its_worker_threads(tiny_run: Path) -> None:
    # 200 images of 28 px: HOG splits the batch into chunks that run in a thread pool when torch has
    # more than one thread; those threads are outside any inference mode of the caller.
    session = open_session(tiny_run, "synthetic:classes=3,size=28,train=200,val=20,channels=1", precision_name="fp32")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = probe(session, ProbeConfig(layers=("fc7",), max_iter=20), progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(previous)
    assert [r.name for r in result.rows] == ["fc7", "hog", "pixels"] and result.train_images == 200


def test_probe_command_prints_the_table_and_saves_it(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_main(capsys, "probe", str(tiny_run), "--layers", "conv1,fc6", "--train-images", "24",
                              "--no-progress", "--precision", "fp32")  # fmt: skip
    assert code == 0, err
    lines = [line.split()[0] for line in out.splitlines() if line.split()]
    for name in ("conv1", "fc6", "hog", "pixels"):
        assert name in lines
    saved = json.loads(probe_path(tiny_run).read_text())
    assert [r["name"] for r in saved["rows"]] == ["conv1", "fc6", "hog", "pixels"] and saved["train_images"] == 24
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in saved["rows"])


def test_probe_on_other_classes_than_the_models(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = "synthetic:classes=5,size=28,train=40,val=20,channels=1,seed=3"
    code, out, err = cli_main(capsys, "probe", str(tiny_run), "--data", other, "--layers", "fc7", "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    assert result["data"] == other and [r["name"] for r in result["rows"]] == ["fc7", "hog", "pixels"]


def test_probe_bad_input_is_one_line(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(cli_main(capsys, "probe", str(tiny_run), "--layers", "conv9")[::2], "unknown layer conv9")
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "config.json").write_text(json.dumps({"kind": BASELINE_KIND}))
    assert_one_line_error(cli_main(capsys, "probe", str(baseline))[::2], "no layers to probe")
    assert_one_line_error(cli_main(capsys, "probe", str(tmp_path / "missing"))[::2], "")
