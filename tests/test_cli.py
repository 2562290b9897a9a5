"""Every subcommand has --help; every user error is one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from alexnet import models
from alexnet.cli import main
from tests.helpers.cli import assert_one_line_error, cli_main, run_cli

SYN = "synthetic:classes=3,size=28,train=64,val=16,channels=1"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, stderr)."""
    code, _, err = cli_main(capsys, *args)
    return code, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("train", "--data", SYN, "--epochs", "1", "--batch-size", "16", "--no-progress", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.parametrize(
    "command", [[], ["models"], ["train"], ["eval"], ["predict"], ["demo"], ["bench"], ["bench", "train"]]
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli_main(capsys, *command, "--help")
    assert code == 0
    assert out.startswith("usage: alexnet"), out[:200]


def test_models_json_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alexnet"]["parameters"] == 60_965_224 and rows["alexnet"]["input_size"] == 227
    assert {"alexnet", "alexnet-owt", "alexnet-small"} <= set(rows) and set(rows) == set(models.available())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train"], "--data is required"),
        (["train", "--data", SYN, "--model", "resnet50"], "unknown model"),
        (["train", "--data", SYN, "--lr", "-1"], "lr must be > 0"),
        (["train", "--data", SYN, "--batch-size", "0"], "batch-size must be >= 1"),
        (["train", "--data", SYN, "--epochs", "ten"], "invalid int value"),
        (["train", "--data", SYN, "--recipe", "fast"], "invalid choice"),
        (["train", "--data", SYN, "--device", "cuda"] if not torch.cuda.is_available() else ["train", "--bogus"], ""),
        (["train", "--data", "synthetic:colour=red"], "synthetic option"),
        (["train", "--data", "no-such-source"], ""),
        (["train", "--resume", "/nonexistent/run"], "not found"),
        (["eval", "/nonexistent/model.pt"], "not found"),
        (["models", "--bogus"], "unrecognized arguments"),
        (["predict", "/nonexistent.pt", "x.png"], "not found"),
    ],
)
def test_user_errors_are_one_line(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(cli(capsys, *args), fragment)


def test_wrong_kinds_of_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    assert_one_line_error(cli(capsys, "eval", str(garbage), "--data", SYN), "not a readable checkpoint")
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.zeros(3)}, bare)
    assert_one_line_error(cli(capsys, "eval", str(bare), "--data", SYN), "not an alexnet checkpoint")
    folder = tmp_path / "empty-run"
    folder.mkdir()
    assert_one_line_error(cli(capsys, "eval", str(folder)), "without checkpoints/last.pt")


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_loading_a_checkpoint_never_runs_code_from_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.target = str(marker)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"kind": "alexnet-checkpoint", "payload": exploit}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_one_line_error(cli(capsys, "eval", str(evil), "--data", SYN), "not a readable checkpoint")
    assert not marker.exists()
    # torch's two-line warning about the pickle protocol would print before the one-line error.
    assert not [w for w in caught if "pickle protocol" in str(w.message)]


def test_demo_with_a_wrong_data_source_stops_before_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_main(capsys, "demo", "--data", "nosuch", "--out", str(tmp_path / "demo"))
    assert_one_line_error((code, err), "unknown data source")
    assert "baseline" not in out and not (tmp_path / "demo").exists() and not (tmp_path / "demo-hog").exists()


def test_run_folder_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(cli(capsys, "train", "--data", SYN, "--batch-size", "16", "--out", str(tiny_run)), "already holds a run")
    assert_one_line_error(cli(capsys, "train", "--resume", str(tiny_run), "--lr", "0.5"), "drop --lr")
    assert_one_line_error(cli(capsys, "eval", str(tiny_run), "--data", "synthetic:classes=5,size=28,train=8,val=8,channels=1"), "classes")


def test_predict_errors_and_output(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_one_line_error(cli(capsys, "predict", str(tiny_run), str(text)), "cannot read image")
    assert_one_line_error(cli(capsys, "predict", str(tiny_run), str(tmp_path / "missing.png")), "image not found")
    from PIL import Image

    image = tmp_path / "photo.jpg"
    Image.new("RGB", (60, 40), (200, 30, 30)).save(image)
    assert main(["predict", str(tiny_run), str(image), "--topk", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    probs = [p["probability"] for p in result[0]["predictions"]]
    assert len(probs) == 2 and probs[0] >= probs[1] and result[0]["predictions"][0]["class"].startswith("class_")


def test_eval_reports_what_training_measured(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_run), "--json", "--precision", "fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 16 and result["crops"] == 1 and result["synthetic"] is True
    assert 0 <= result["top1_err"] <= 1 and result["top5_err"] <= result["top1_err"]


def test_real_process_error_has_no_traceback() -> None:
    proc = run_cli("train", "--data", SYN, "--model", "vgg16")
    assert_one_line_error(proc, "unknown model")


def test_demo_runs_end_to_end_with_recipe_overrides(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_cli("demo", "--data", SYN, "--epochs", "2", "--batch-size", "16", "--lr", "0.01", "--dropout", "0.5",
                   "--eval-views", "flip", "--widths", "8,16,24,24,16", "--fc-width", "64", "--no-progress", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout and "test accuracy after" in proc.stdout
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    recipe = json.loads((out / "config.json").read_text())["config"]["recipe"]
    assert (recipe["name"], recipe["epochs"], recipe["dropout"], recipe["eval_views"]) == ("small", 2, 0.5, "flip")
    conv5 = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]["features.conv5.weight"]
    assert conv5.shape[0] == 16  # the model options reached the model
    # The flip views were what validation used: eval --flip on the saved weights agrees.
    result = json.loads(run_cli("eval", str(out), "--flip", "--json").stdout)
    assert result["crops"] == 2 and result["top1_err"] == pytest.approx(history[-1]["val_top1_err"], abs=1e-9)


def test_demo_long_setting_and_flags_beside_it(tmp_path: Path) -> None:
    from alexnet.cli.demo_cmd import LONG_MODEL, LONG_RECIPE

    out = tmp_path / "long"
    proc = run_cli("demo", "--long", "--data", SYN, "--epochs", "1", "--dropout", "0.1", "--seed", "3", "--batch-size", "16",
                   "--no-progress", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())["config"]
    recipe = config["recipe"]
    assert recipe["epochs"] == 1 and recipe["dropout"] == 0.1 and config["seed"] == 3  # given flags win
    assert (recipe["crop_pad"], recipe["eval_views"]) == (LONG_RECIPE["crop_pad"], LONG_RECIPE["eval_views"])
    weights = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert [weights[f"features.conv{i}.weight"].shape[0] for i in range(1, 6)] == LONG_MODEL["widths"]
    assert weights["classifier.fc6.weight"].shape[0] == LONG_MODEL["fc_width"]
