"""Nothing the user has is lost: one writer per run folder (two real processes), and a failed
write (a full or read-only file system, made for real with tmpfs) is one line, a non-zero exit
and the previous checkpoint intact."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from alexnet.errors import UserError
from alexnet.runfolder import LOCK_NAME, run_folder_lock
from tests.helpers.cli import REPO, assert_one_line_error, cli_main, run_cli

SYN = "synthetic:classes=3,size=28,train=1024,val=16,channels=1"
TINY = ["--widths", "8,16,24,24,16", "--fc-width", "32", "--batch-size", "16", "--epochs", "1", "--no-progress"]
HOLD = "import sys, time; from alexnet.runfolder import run_folder_lock\nwith run_folder_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True); time.sleep(600)"  # fmt: skip


def test_a_second_writer_gets_one_line_and_a_killed_one_leaves_no_stale_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = run_cli("train", "--data", SYN, *TINY, "--out", str(run))
        assert_one_line_error(second, f"{run} is in use by another alexnet process (pid {holder.pid})")
        assert not (run / "checkpoints").exists()  # the second writer wrote nothing
        with pytest.raises(UserError, match=f"pid {holder.pid}"), run_folder_lock(run):  # in-process too
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
        holder.wait()
    with run_folder_lock(run) as folder:
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_the_lock_is_held_for_the_whole_run_and_released_after(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_folder_lock(run):
        from alexnet.cli import main

        assert main(["train", "--data", SYN, *TINY, "--out", str(run)]) == 2  # same process, second writer
    assert not (run / "checkpoints").exists()


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real small file system at ``path`` (root only; the test is skipped where it cannot mount)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Write a file until the file system is full."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def test_disk_full_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run = disk / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "alexnet", "train", "--data", SYN, *TINY, "--checkpoint-every", "2", "--out", str(run)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.time() + 300
        while not (run / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.01)
        fill(disk)  # the next checkpoint (64 steps, one every 2) cannot be written
        _out, err = proc.communicate(timeout=300)
        assert_one_line_error((proc.returncode, err), "No space left on device")
        assert str(run) in err  # names the path
        ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # the previous one, whole
        assert ckpt["step"] % 2 == 0 and ckpt["step"] < 64
        assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # no half file


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, stderr)."""
    code, _, err = cli_main(capsys, *args)
    return code, err


def test_read_only_run_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        code, err = cli(capsys, "train", "--data", SYN, *TINY, "--out", str(ro / "run"))
        assert_one_line_error((code, err), "Read-only file system")
        assert str(ro / "run") in err


def test_prepare_on_a_full_or_read_only_disk_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(12):
            Image.effect_noise((96, 96), 30 + i).convert("RGB").save(src / c / f"{i}.png")
    with tmpfs(tmp_path / "small", "96k") as small:
        code, err = cli(capsys, "prepare", str(src), str(small / "out"), "--size", "64", "--encoding", "raw",
                        "--shard-size", "2", "--workers", "1", "--no-progress")  # fmt: skip
        assert_one_line_error((code, err), "No space left on device")
        assert str(small / "out") in err
        assert not [p for p in (small / "out").rglob("*") if ".tmp" in p.name]  # no half file left
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        code, err = cli(capsys, "prepare", str(src), str(ro / "out"), "--size", "64", "--workers", "1", "--no-progress")
        assert_one_line_error((code, err), "Read-only file system")


def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path) -> None:
    # mkstemp's temporary file is 0600; a finished report or checkpoint must be readable as any
    # file the user writes is (0666 less the umask), not private to the writer.
    from alexnet.io import atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~mask
