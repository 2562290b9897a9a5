"""Bad input, as a table: each row is a command line a user typed (with the files it names made
for real); each must end in exit code 2, one line on stderr naming the problem, no traceback.
(Training-side rows, such as damaged checkpoints, live in their own table.)"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from alexnet.cli import main
from tests.helpers.cli import assert_one_line_error, run_cli

SYN = "synthetic:classes=3,size=28,train=32,val=8,channels=1"
TINY = ["--widths", "8,16,24,24,16", "--fc-width", "32", "--batch-size", "16", "--epochs", "1", "--no-progress"]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb by its size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the table's command lines name: a trained run, a bomb, a plain file, a folder
    without images, a prepared one-class dataset."""
    root = tmp_path_factory.mktemp("bad")
    assert main(["train", "--data", SYN, *TINY, "--out", str(root / "run")]) == 0
    (root / "bomb.png").write_bytes(png_header(50_000, 50_000))
    (root / "file").write_text("a file, not a folder")
    (root / "no-images").mkdir()
    (root / "no-images" / "notes.txt").write_text("hello")
    (root / "one" / "cat").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(root / "one" / "cat" / f"{i}.png")
    assert main(["prepare", str(root / "one"), str(root / "one-prepared"), "--size", "16", "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    return root


# (command line with {root} for the module's folder, a fragment the one line must contain)
BAD_INPUT = [
    ("predict {root}/run {root}/bomb.png", "too large"),
    ("predict {root}/run https://example.org/cat.jpg", "not fetched"),
    ("predict {root}/run {root}/no-images", "without image files"),
    ("predict {root}/run {root}/missing.png", "image not found"),
    ("train --data " + SYN + " --out {root}/file", "is a file"),
    ("train --data " + SYN + " --out {root}/file/run", "is under"),
    ("demo --data " + SYN + " --out {root}/file", "is a file"),
    ("models --num-classes -3", "expected a number >= 1"),
    ("train --data synthetic:train=100000000000 --out {root}/huge", "memory"),
    ("train --data synthetic:size=100000,train=8,val=8 --out {root}/huge", "memory"),
    ("train --data /nope --out {root}/nope", "not found"),
    ("train --data ./nope --out {root}/nope", "not found"),
    ("train --data fashion-mnist:/nope --out {root}/nope", "not found"),
    ("train --data {root}/one-prepared --out {root}/one-run", "at least 2"),
    ("eval {root}/no-images", "without checkpoints/last.pt"),
]


@pytest.mark.parametrize(("line", "fragment"), BAD_INPUT, ids=[line.split(" {")[0] for line, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(world: Path, line: str, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(line.format(root=world).split())
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    assert_one_line_error((code, capsys.readouterr().err), fragment)
    assert not (world / "huge").exists() and not (world / "one-run").exists()  # no empty run folder left


def test_bad_input_in_a_real_process(world: Path) -> None:
    """The same, through the console entry point in its own process (stderr as a user sees it)."""
    proc = run_cli("predict", str(world / "run"), str(world / "bomb.png"))
    assert_one_line_error(proc, "too large")


def test_one_class_folder_prepares_with_a_warning(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", str(world / "one"), str(world / "one-again"), "--size", "16", "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning:" in err and "only 1 class (cat)" in err and "at least 2" in err


def test_predict_reads_stdin_and_empty_stdin_is_one_line(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from alexnet.inference import open_predictor

    buf = io.BytesIO()
    Image.new("RGB", (30, 30), (10, 200, 10)).save(buf, "PNG")
    (world / "green.png").write_bytes(buf.getvalue())
    model = open_predictor(world / "run", precision="fp32")
    from_stdin = model.predict(["-"], stdin=io.BytesIO(buf.getvalue()))
    from_file = model.predict([str(world / "green.png")])
    assert from_stdin[0]["image"] == "<stdin>" and from_stdin[0]["predictions"] == from_file[0]["predictions"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))  # `alexnet predict RUN - < /dev/null`
    assert_one_line_error((main(["predict", str(world / "run"), "-"]), capsys.readouterr().err), "empty file")
