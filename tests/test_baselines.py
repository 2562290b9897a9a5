"""The 2011 baselines end to end: they learn, save without pickle, resume, evaluate, predict,
refuse bad input with one line, and the demo's story table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.baselines import BaselineConfig, evaluate_baseline, fit_baseline, is_baseline_run, load_baseline
from tests.helpers.cli import assert_one_line_error, cli_main
from tests.helpers.shapes import draw_shapes, write_idx

SYN = "synthetic:classes=4,size=28,train=64,val=32,channels=1"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("shapes")
    write_idx(folder, "train", *draw_shapes(800, 0))
    write_idx(folder, "val", *draw_shapes(200, 1))
    return f"mnist:{folder}"


@pytest.fixture(scope="module")
def hog_run(shapes: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "hog"
    metrics = fit_baseline(BaselineConfig(data=shapes, features="hog", max_iter=100), out, progress=False)
    return out, metrics


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    return cli_main(capsys, *args)


def test_hog_baseline_learns_real_images(hog_run: tuple[Path, dict]) -> None:
    out, m = hog_run
    assert 1 - m["val_top1_err"] >= 0.90, m
    assert m["val_n"] == 200 and m["train_n"] == 800 and m["feature_dim"] == 1296 + 324
    assert m["extract_images_per_sec"] > 0 and m["fit_seconds"] > 0
    assert json.loads((out / "metrics.json").read_text()) == m


def test_raw_pixels_floor_runs_and_is_beaten_by_hog(shapes: str, hog_run: tuple[Path, dict], tmp_path: Path) -> None:
    raw = fit_baseline(BaselineConfig(data=shapes, features="raw", max_iter=100), tmp_path / "raw", progress=False)
    assert raw["feature_dim"] == 784
    assert raw["val_top1_err"] > hog_run[1]["val_top1_err"]  # what the features buy on shifted shapes


def test_run_folder_has_no_pickle_and_round_trips_scores(hog_run: tuple[Path, dict]) -> None:
    out, m = hog_run
    assert is_baseline_run(out) and not is_baseline_run(out / "features")
    for npz in ("extractor.npz", "classifier.npz"):
        np.load(out / npz, allow_pickle=False)  # raises if any entry needed pickle
    model = load_baseline(out)
    x_val = np.load(out / "features" / "val.npy", allow_pickle=False)
    y_val = np.load(out / "features" / "val-labels.npy", allow_pickle=False)
    saved_scores = model.svm.decision_function(x_val)
    assert saved_scores.shape == (200, 10)
    assert (saved_scores.argmax(1).numpy() != y_val).mean() == pytest.approx(m["val_top1_err"])
    # Loaded again from disk, scoring the images from scratch gives the identical numbers.
    again = load_baseline(out)
    ds_images = torch.from_numpy(_val_images(m["data"]))
    torch.testing.assert_close(again.scores(ds_images), saved_scores, rtol=0, atol=1e-5)


def _val_images(data: str) -> np.ndarray:
    from alexnet.data import open_dataset

    return open_dataset(data).splits["val"][0].numpy()


def test_eval_and_predict_cli_on_a_baseline_run(hog_run: tuple[Path, dict], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out, m = hog_run
    code, stdout, _ = cli(capsys, "eval", str(out), "--json")
    result = json.loads(stdout)
    assert code == 0 and result["n"] == 200
    assert result["top1_err"] == pytest.approx(m["val_top1_err"]) and result["top5_err"] == pytest.approx(m["val_top5_err"])
    code, stdout, _ = cli(capsys, "eval", str(out))
    assert code == 0 and "top-1 error" in stdout
    images = _val_images(m["data"])
    labels = np.arange(200) % 4
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(images[i, 0]).save(paths[-1])
    code, stdout, _ = cli(capsys, "predict", str(out), *map(str, paths), "--json", "--topk", "3")
    results = json.loads(stdout)
    assert code == 0 and len(results) == 8 and all(len(r["predictions"]) == 3 for r in results)
    top = [int(r["predictions"][0]["index"]) for r in results]
    # The same pixels through the file path give the same top class as through the dataset.
    expected = load_baseline(out).scores(torch.from_numpy(images[:8])).argmax(1).tolist()
    assert top == expected and np.mean(np.array(top) == labels[:8]) >= 0.75


def test_resume_skips_finished_stages_and_ignores_partial_files(shapes: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = BaselineConfig(data=shapes, features="hog", max_iter=30)
    first = fit_baseline(cfg, out, progress=False)
    train_features = out / "features" / "train.npy"
    before = os.stat(train_features)
    # A killed run: the classifier never written, a half-written features file left behind.
    (out / "classifier.npz").unlink()
    (out / "metrics.json").unlink()
    (out / "features" / "val.npy").unlink()
    (out / "features" / ".val.npy.partial").write_bytes(b"half a file")
    second = fit_baseline(cfg, out, progress=False)
    after = os.stat(train_features)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # not recomputed
    assert second["val_top1_err"] == first["val_top1_err"] and second["train_top1_err"] == first["train_top1_err"]
    assert not (out / "features" / ".val.npy.partial").exists()  # replaced by the finished file


def test_hog_rbf_kernel_map_runs_and_saves(shapes: str, tmp_path: Path) -> None:
    m = fit_baseline(BaselineConfig(data=shapes, features="hog-rbf", landmarks=100, max_iter=40), tmp_path / "rbf", progress=False)
    assert m["feature_dim"] <= 100 and 1 - m["val_top1_err"] >= 0.85
    model = load_baseline(tmp_path / "rbf")
    assert model.extractor.gamma > 0  # type: ignore[attr-defined]
    assert evaluate_baseline(tmp_path / "rbf")["top1_err"] == pytest.approx(m["val_top1_err"])


def test_bad_input_is_one_line(shapes: str, hog_run: tuple[Path, dict], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out, _ = hog_run
    code, _, err = cli(capsys, "baseline", "--data", SYN, "--features", "sift-surf", "--out", str(tmp_path / "x"))
    assert_one_line_error((code, err), "unknown features")
    code, _, err = cli(capsys, "eval", str(out), "--data", "synthetic:classes=10,size=28,train=8,val=8,channels=3")
    assert_one_line_error((code, err), "channel")
    code, _, err = cli(capsys, "train", "--resume", str(out))
    assert_one_line_error((code, err), "baseline run")
    code, _, err = cli(capsys, "baseline", "--data", SYN, "--features", "raw", "--l2", "5", "--out", str(out))
    assert_one_line_error((code, err), "other settings")
    one_class = tmp_path / "one"
    images, _ = draw_shapes(16, 2)
    write_idx(one_class, "train", images, np.zeros(16))
    write_idx(one_class, "val", images, np.zeros(16))
    code, _, err = cli(capsys, "baseline", "--data", f"mnist:{one_class}", "--features", "raw", "--out", str(tmp_path / "o"))
    assert_one_line_error((code, err), "same label")
    empty = tmp_path / "empty"
    write_idx(empty, "train", images, np.arange(16) % 2)
    write_idx(empty, "val", images[:0], np.zeros(0))
    code, _, err = cli(capsys, "baseline", "--data", f"mnist:{empty}", "--features", "raw", "--out", str(tmp_path / "e"))
    assert_one_line_error((code, err), "empty")


def test_baseline_cli_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code, stdout, _ = cli(capsys, "baseline", "--data", SYN, "--features", "hog", "--max-iter", "20", "--no-progress",
                          "--out", str(out), "--json")  # fmt: skip
    m = json.loads(stdout)
    assert code == 0 and m["synthetic"] and m["run"] == str(out)
    assert json.loads((out / "config.json").read_text())["kind"] == "alexnet-baseline"


def test_demo_story_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code, stdout, _ = cli(capsys, "demo", "--data", SYN, "--epochs", "1", "--batch-size", "16", "--widths", "8,16,24,24,16",
                          "--fc-width", "32", "--no-progress", "--out", str(out))  # fmt: skip
    assert code == 0
    hog = json.loads((tmp_path / "demo-hog" / "metrics.json").read_text())
    net = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    table = stdout[stdout.index("2011 vs 2012"):]
    hog_row = next(line for line in table.splitlines() if line.startswith("2011") and "HOG + linear SVM" in line)
    assert f"{1 - hog['val_top1_err']:.2%}" in hog_row and "designed" in hog_row
    net_row = next(line for line in table.splitlines() if line.startswith("2012"))
    assert f"{1 - net['val_top1_err']:.2%}" in net_row and "learned" in net_row
    assert "SYNTHETIC" in table and "--features sift-fv" in table and "--features hog-rbf" in table
    assert "45.7 / 25.7" in table and "- / 26.2" in table and "37.5 / 17.0" in table  # paper rows
    assert sum(line.startswith(("2011  ", "2012  ")) for line in table.splitlines()) == 4  # hog, hog-rbf, sift-fv, net


def test_report_of_a_baseline_run_draws_its_predictions(hog_run: tuple[Path, dict], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # The fitted baseline saves its validation predictions; `alexnet report` turns them into the
    # per-class table and the confusion matrix, and says which sections mean nothing for it.
    out, m = hog_run
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        labels, topk = z["labels"], z["topk"]
    assert len(labels) == m["val_n"] and np.mean(topk[:, 0] != labels) == pytest.approx(m["val_top1_err"])
    page = tmp_path / "report.html"
    code, _, err = cli(capsys, "report", str(out), "--out", str(page))
    assert code == 0, err
    html = page.read_text()
    assert 'id="per-class"' in html and 'id="confusion"' in html
    assert "Not meaningful for a baseline run: it has no learned convolution kernels" in html
