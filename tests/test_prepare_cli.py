"""`alexnet prepare` and `alexnet data` from the command line: resume after SIGKILL (a real
subprocess), one-line errors, the index and show commands."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from alexnet.cli import main
from alexnet.data.prepare import Settings, prepare
from tests.helpers import layouts as fx
from tests.helpers.cli import REPO, assert_one_line_error, run_cli

KILL_POINTS, KILL_SEED = 3, 2012


def test_sigkill_at_random_points_then_resume_gives_identical_output(tmp_path: Path) -> None:
    """kill -9 at KILL_POINTS seeded random points (after a random number of finished shards, plus
    a random delay into the next ones), each time running the command again; the end is
    byte-identical to an uninterrupted run."""
    src = tmp_path / "src"
    for k in range(3):
        (src / f"c{k}").mkdir(parents=True)
        for i in range(50):
            (src / f"c{k}" / f"{i:03d}.jpg").write_bytes(fx.jpeg(1000 * k + i))
    (src / "c1" / "bad.jpg").write_bytes(fx.truncated_jpeg(5))
    args = ["--size", "384", "--shard-size", "5", "--val-fraction", "0.1"]
    # Reference: an uninterrupted run (in-process; the same code as the command).
    reference = tmp_path / "reference"
    prepare(src, reference, settings=Settings(size=384, shard_size=5), workers=1, val_fraction=0.1, progress=False)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "alexnet", "prepare", str(src), str(out), "--workers", "1", "--no-progress", *args]
    rng = random.Random(KILL_SEED)
    targets = sorted(rng.sample(range(1, 27), KILL_POINTS))  # of 31 shards: leave some for the last run
    for target in targets:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 600  # generous: a loaded CI machine can take minutes to start Python
        while len(list(out.glob(".work/*.npz"))) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(list(out.glob(".work/*.npz"))) >= target, f"never got {target} shards done"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.communicate()
        assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
        for shard in sorted(out.glob("*-*.tar")):  # whatever is in place under a final name is complete
            with tarfile.open(shard) as tar:
                assert len(tar.getnames()) == 10  # 5 samples x (.jpg + .cls)

    rerun = run_cli("prepare", str(src), str(out), "--workers", "2", "--no-progress", *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 skipped" in rerun.stdout
    assert int(rerun.stderr.split("resuming: ")[1].split()[0]) >= targets[-1]  # shards not made again
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in reference.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_unrecognised_source_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    proc = run_cli("prepare", str(tmp_path / "junk"), str(tmp_path / "out"))
    assert_one_line_error(proc, "no known dataset layout")
    assert all(name in proc.stderr for name in ("ilsvrc", "kaggle", "folder", "idx", "cifar"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    src = fx.make_ilsvrc(root / "src", hostile=False)
    out = root / "out"
    assert (
        main(["prepare", str(src), str(out), "--size", "32", "--shard-size", "4", "--workers", "2", "--no-progress"])
        == 0
    )
    return out


def test_prepare_summary(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = prepared.parent / "src"
    assert main(["prepare", str(src), str(prepared), "--size", "32", "--shard-size", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        "already prepared" in out
        and "train: 9 images stored, 1 skipped" in out
        and "val: 6 images stored, 2 skipped" in out
    )
    assert "3 input files were skipped" in out


def test_data_index_lists_every_sample(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "index", str(prepared), "--split", "val"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = fx.expected_ilsvrc(hostile=False)["val"]
    assert {r["key"]: r["label"] for r in rows} == expected and len(rows) == len(expected)
    assert rows[0] == {"key": "ILSVRC2012_val_00000001", "label": 0}
    assert main(["data", "index", str(prepared)]) == 0
    train = {json.loads(x)["key"]: json.loads(x)["label"] for x in capsys.readouterr().out.splitlines()}
    assert train == fx.expected_ilsvrc(hostile=False)["train"]


def test_data_show_and_contact_sheet(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.png"
    assert main(["data", "show", str(prepared), "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    for text in ("train: 9 images of 10 input files (1 skipped)", "alpha, first class", "n03000003_8.JPEG",
                 "truncated", "eigenvalues", "mean ("):  # fmt: skip
        assert text in out, text
    with Image.open(grid) as img:
        assert img.mode == "RGB" and img.width >= 3 * 32
    assert main(["data", "show", str(prepared), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"]["count"] == 6


def test_data_commands_on_a_folder_that_is_not_prepared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "show", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error((2, err), "alexnet prepare")


def test_sigterm_stops_prepare_with_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (sent to this process right after its first shard is written) stops the run in one
    line that says how to resume; the finished shard stays and the next run only does the rest."""
    from alexnet.data.prepare import run as prepare_run

    src = tmp_path / "src"
    for k in range(2):
        (src / f"c{k}").mkdir(parents=True)
        for i in range(6):
            (src / f"c{k}" / f"{i:03d}.jpg").write_bytes(fx.jpeg(100 * k + i))
    out = tmp_path / "out"
    args = ["prepare", str(src), str(out), "--size", "64", "--shard-size", "2", "--workers", "1", "--no-progress"]
    write_shard = prepare_run.write_shard

    def write_then_terminate(*a: object, **kw: object) -> None:
        write_shard(*a, **kw)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered to the real handler

    monkeypatch.setattr(prepare_run, "write_shard", write_then_terminate)
    assert main(args) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and f"alexnet prepare {src} {out}" in lines[0], err
    assert not (out / "manifest.json").exists() and len(list(out.glob("*.tar"))) == 1
    monkeypatch.setattr(prepare_run, "write_shard", write_shard)
    assert main(args) == 0
    assert "resuming: 1 of 6 shards already done" in capsys.readouterr().err
