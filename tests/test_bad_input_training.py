"""Bad input on the training, evaluation and checkpoint side: one line, exit 2, no traceback;
and the recoveries a user needs (damaged last.pt, --resume FILE, step-checkpoint retention).

One tiny real run (4 steps, a checkpoint after each) is trained once; each case damages a copy.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet.cli import main
from tests.helpers.cli import assert_one_line_error, cli_main, run_cli

DATA = "synthetic:classes=4,size=32,train=64,val=16,channels=1"
SMALL_NET = ["--widths", "8,8,8,8,8", "--fc-width", "32"]
ARGS = ["--data", DATA, "--epochs", "1", "--batch-size", "16", "--lr", "0.01", "--precision", "fp32", *SMALL_NET]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, stderr)."""
    code, _, err = cli_main(capsys, *args)
    return code, err


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 4-step run with a step checkpoint after every step (progress bar on, but
    stderr is a pipe); returns the folder and the run's stderr."""
    out = tmp_path_factory.mktemp("bad-input") / "run"
    proc = run_cli("train", *ARGS, "--checkpoint-every", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def copy_run(run: tuple[Path, str], dst: Path) -> Path:
    shutil.copytree(run[0], dst)
    return dst


def reshaped(path: Path, dst: Path) -> str:
    """Save ``path``'s checkpoint to ``dst`` with its last weight one row longer; returns its key."""
    ckpt = torch.load(path, weights_only=True)
    key = list(ckpt["model"])[-2]  # fc8's weight (the last entry is its bias)
    w = ckpt["model"][key]
    ckpt["model"][key] = torch.zeros(w.shape[0] + 1, *w.shape[1:])
    torch.save(ckpt, dst)
    return key


@pytest.fixture(scope="module")
def no_val_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset whose val split is empty (``--val-fraction 0``)."""
    root = tmp_path_factory.mktemp("noval")
    for c, colour in enumerate(((200, 0, 0), (0, 0, 200))):
        (root / "src" / f"class{c}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(root / "src" / f"class{c}" / f"{i}.png")
    code = main(["prepare", str(root / "src"), str(root / "out"), "--size", "32", "--val-fraction", "0",
                 "--workers", "1", "--no-progress"])  # fmt: skip
    assert code == 0
    return root / "out"


CASES = {
    # name: (how to build the arguments from (run folder, scratch folder), fragment of the message)
    "32 px model on 64 px data": (
        lambda r, t: ["eval", str(r), "--data", "synthetic:classes=4,size=64,train=8,val=8,channels=1"], "32 px"),
    "text file as checkpoint": (
        lambda r, t: ["eval", str(_write(t / "notes.pt", b"hello, I am a text file\n")), "--data", DATA],
        "not a PyTorch file"),
    "empty checkpoint file": (lambda r, t: ["eval", str(_write(t / "empty.pt", b"")), "--data", DATA], "empty (0 bytes)"),
    "pickle of Python objects": (
        lambda r, t: ["eval", str(_save(t / "objects.pt", {"kind": "alexnet-checkpoint", "path": Path("x")})), "--data", DATA],
        "pickled Python objects"),
    "bare pickle.dump": (
        lambda r, t: ["eval", str(_write(t / "plain.pt", pickle.dumps({"kind": "alexnet-checkpoint"}, protocol=4))), "--data", DATA],
        "plain Python pickle"),
    "truncated checkpoint": (
        lambda r, t: ["eval", str(_write(t / "cut.pt", (r / "checkpoints" / "last.pt").read_bytes()[:5000])), "--data", DATA],
        "truncated"),
    "resume with --seed": (lambda r, t: ["train", "--resume", str(r), "--seed", "5"], "drop --seed"),
    "resume a file outside checkpoints/": (
        lambda r, t: ["train", "--resume", str(_write(t / "x.pt", (r / "checkpoints" / "last.pt").read_bytes()))],
        "give the run folder"),
    "resume a folder without last.pt": (lambda r, t: ["train", "--resume", str(_mkdir(t / "empty-run"))], "nothing to resume"),
    "--resume-from-valid alone": (lambda r, t: ["train", "--data", DATA, "--resume-from-valid"], "goes with --resume"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name: str, run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_args, fragment = CASES[name]
    assert_one_line_error(cli(capsys, *make_args(run[0], tmp_path)), fragment)


def test_state_dict_mismatch_names_the_key_and_both_shapes(run: tuple[Path, str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    key = reshaped(run[0] / "checkpoints" / "last.pt", tmp_path / "other.pt")
    shape = "x".join(map(str, weights(run[0] / "checkpoints" / "last.pt")[key].shape))
    code, err = cli(capsys, "eval", str(tmp_path / "other.pt"), "--data", DATA)
    assert_one_line_error((code, err), key)
    assert f"but {shape} in the model" in err
    # The same for a run whose last.pt has other shapes, on --resume.
    other = copy_run(run, tmp_path / "run")
    reshaped(other / "checkpoints" / "last.pt", other / "checkpoints" / "last.pt")
    assert_one_line_error(cli(capsys, "train", "--resume", str(other), "--epochs", "2"), key)


def test_empty_validation_split_is_an_error(no_val_folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_line_error(cli(capsys, "train", "--data", str(no_val_folder), "--out", str(tmp_path / "r")), "no validation images")


def test_damaged_last_pt_names_the_newest_valid_checkpoint_and_resumes_from_it(
    run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = copy_run(run, tmp_path / "run")
    ckpts = damaged / "checkpoints"
    (ckpts / "step-00000004.pt").unlink()
    (ckpts / "best.pt").unlink()
    (ckpts / "last.pt").write_bytes(b"")  # zero bytes, as after a crash of a copy
    assert_one_line_error(cli(capsys, "train", "--resume", str(damaged)), "step-00000003.pt (step 3): resume from it with --resume-from-valid")
    (ckpts / "last.pt").write_bytes((run[0] / "checkpoints" / "last.pt").read_bytes()[:3000])  # truncated
    assert_one_line_error(cli(capsys, "train", "--resume", str(damaged)), "--resume-from-valid")
    code, err = cli(capsys, "train", "--resume", str(damaged), "--resume-from-valid", "--no-progress")
    assert code == 0, err
    assert "damaged; resuming from step-00000003.pt" in err
    a, b = weights(run[0] / "checkpoints" / "last.pt"), weights(ckpts / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the one remaining step, bit-identical


def test_resume_accepts_a_checkpoint_file_of_the_run(run: tuple[Path, str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    copy = copy_run(run, tmp_path / "run")
    code, err = cli(capsys, "train", "--resume", str(copy / "checkpoints" / "step-00000003.pt"), "--no-progress")
    assert code == 0, err
    a, b = weights(run[0] / "checkpoints" / "last.pt"), weights(copy / "checkpoints" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(copy / "checkpoints" / "last.pt", weights_only=True)["step"] == 4


def test_only_the_newest_step_checkpoints_are_kept(run: tuple[Path, str]) -> None:
    names = sorted(p.name for p in (run[0] / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step-00000003.pt", "step-00000004.pt"]  # default --keep-checkpoints 2


def test_progress_bar_stays_off_a_pipe(run: tuple[Path, str]) -> None:
    assert "\r" not in run[1]  # stderr was a pipe: no carriage-return frames in logs
    assert "Traceback" not in run[1]


def test_nan_before_the_first_checkpoint_does_not_claim_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nan"
    code, err = cli(capsys, "train", "--data", DATA, "--epochs", "1", "--batch-size", "16", "--lr", "1e6",
                    "--precision", "fp32", "--no-progress", *SMALL_NET, "--out", str(out))  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "no checkpoint was written" in lines[0] and "last good checkpoint" not in lines[0]
    assert not (out / "checkpoints" / "last.pt").exists()
    assert json.loads((out / "config.json").read_text())["config"]["keep_checkpoints"] == 2
