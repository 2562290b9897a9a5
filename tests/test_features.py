"""`alexnet features` and `alexnet similar`: fc7 activations streamed to disk, retrieval
against a brute-force reference, the cached index and its invalidation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.data import open_dataset
from alexnet.errors import UserError
from alexnet.evaluation.features import Session, check_split, features_of, open_session
from alexnet.evaluation.retrieval import Index, index_paths
from tests.helpers.cli import assert_one_line_error, cli_main

SYN = "synthetic:classes=4,size=28,train=64,val=32,channels=3"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    return cli_main(capsys, *args)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("features") / "run"
    assert main(["train", "--data", SYN, "--epochs", "1", "--batch-size", "16", "--lr", "0.01", "--no-progress",
                 "--out", str(run)]) == 0  # fmt: skip
    return run


def test_retrieval_matches_brute_force_numpy() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2000, 32)).astype(np.float32)
    queries = rng.standard_normal((5, 32)).astype(np.float32)
    index = Index.from_array(base, np.arange(2000))
    found, dist = index.search(queries, 10)
    # Reference: float64 distances between the float16-rounded vectors the index holds.
    x, q = base.astype(np.float16).astype(np.float64), queries.astype(np.float16).astype(np.float64)
    ref = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    order = np.argsort(ref, axis=1, kind="stable")[:, :10]
    assert np.array_equal(found, order)
    assert np.allclose(dist, np.take_along_axis(ref, order, axis=1), rtol=1e-4, atol=1e-3)
    with pytest.raises(UserError):
        index.search(queries[:, :16], 3)


def test_features_streamed_to_npy_match_the_model(tiny_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "val-fc7.npy"
    code, stdout, err = cli(capsys, "features", str(tiny_run), "--split", "val", "--out", str(out), "--batch-size", "10",
                            "--no-progress", "--precision", "fp32", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    feats = np.load(out, mmap_mode="r")
    labels = np.load(tmp_path / "val-fc7.labels.npy")
    assert feats.dtype == np.float32 and feats.shape == (32, 1024) == tuple(summary["shape"])
    dataset = open_dataset(SYN)
    images, expected_labels = dataset.splits["val"]
    assert np.array_equal(labels, expected_labels.numpy())
    session = open_session(tiny_run, SYN, precision_name="fp32")
    direct = features_of(session, images).numpy()
    assert np.allclose(feats, direct, atol=1e-5)
    assert (feats >= 0).all() and (feats > 0).any()  # fc7 after its ReLU
    conv = tmp_path / "conv5.npy"
    code, _, err = cli(capsys, "features", str(tiny_run), "--layer", "conv5", "--out", str(conv), "--no-progress")
    assert code == 0, err
    assert np.load(conv, mmap_mode="r").shape == (64, 64 * 6 * 6)  # train split, conv5 output 64 x 6 x 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv5.labels.npy", "conv5.npy", "val-fc7.labels.npy", "val-fc7.npy"]


def test_similar_finds_the_training_image_itself_and_caches_the_index(tiny_run: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    images, labels = open_dataset(SYN).splits["train"]
    files = []
    for i in (3, 40):
        path = tmp_path / f"train{i}.png"
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path)
        files.append(str(path))
    grid = tmp_path / "grid.png"
    code, out, err = cli(capsys, "similar", str(tiny_run), *files, "--k", "4", "--json", "--out", str(grid), "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    assert result["timing"]["index_built"] is True and result["timing"]["indexed"] == 64
    for i, res in zip((3, 40), result["results"]):
        first = res["neighbours"][0]
        assert first["index"] == i and first["distance"] < 0.05 * res["neighbours"][1]["distance"] + 1e-3
        assert first["label"] == int(labels[i])
        assert [n["distance"] for n in res["neighbours"]] == sorted(n["distance"] for n in res["neighbours"])
    with Image.open(grid) as im:
        assert im.size == (6 + 5 * 102 + 16, 6 + 2 * (96 + 14 + 6))
    # Second call: the cached index is loaded, not rebuilt; the query time is printed.
    code, out, err = cli(capsys, "similar", str(tiny_run), files[0], "--k", "2", "--no-progress")
    assert code == 0, err
    assert "index of 64 train images loaded" in out and "one query:" in out
    # Other data of the same shape: rebuilt.
    other = "synthetic:classes=4,size=28,train=48,val=8,channels=3,seed=1"
    code, out, err = cli(capsys, "similar", str(tiny_run), files[0], "--data", other, "--json", "--no-progress")
    assert code == 0, err
    assert json.loads(out)["timing"]["index_built"] is True and json.loads(out)["timing"]["indexed"] == 48
    # A damaged index is rebuilt, never used.
    feats, _, meta = index_paths(tiny_run, "train")
    feats.write_bytes(b"garbage")
    code, out, err = cli(capsys, "similar", str(tiny_run), files[0], "--json", "--no-progress")
    assert code == 0, err
    assert json.loads(out)["timing"]["index_built"] is True
    assert json.loads(meta.read_text())["shape"] == [64, 1024]


def test_similar_and_features_bad_input_is_one_line(tiny_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert_one_line_error(cli(capsys, "similar", str(tiny_run), str(broken), "--no-progress")[::2], "cannot read image")
    ok = tmp_path / "ok.png"
    Image.new("RGB", (28, 28)).save(ok)
    args = ("similar", str(tiny_run), str(ok), "--data", "synthetic:classes=3,size=28,train=8,val=8")
    assert_one_line_error(cli(capsys, *args)[::2], "expects 4 classes")
    assert_one_line_error(cli(capsys, "features", str(tiny_run), "--out", str(tmp_path / "f.txt"))[::2], ".npy")
    assert_one_line_error(cli(capsys, "features", str(tmp_path / "nothing"), "--out", str(tmp_path / "f.npy"))[::2],
                          "checkpoint not found")  # fmt: skip
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*tmp"))


def test_empty_split_is_a_user_error(tiny_run: Path) -> None:
    session = open_session(tiny_run, SYN)
    dataset = session.dataset
    dataset.splits = {**dataset.splits, "val": (dataset.splits["val"][0][:0], dataset.splits["val"][1][:0])}
    empty = Session(session.loaded, dataset, "an empty set", session.device, session.precision, session.pipeline)
    with pytest.raises(UserError, match="val split of an empty set is empty"):
        check_split(empty, "val")
    assert torch.is_tensor(dataset.splits["train"][0])
