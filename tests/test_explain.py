"""`alexnet explain`: Grad-CAM and occlusion maps of image files through the one predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet.reporting.explain import overlay
from alexnet.runfolder import BASELINE_KIND
from tests.helpers.cli import assert_one_line_error, cli_main
from tests.helpers.interop import make_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("explain") / "run")  # alexnet-small, 4 classes, 32 px images, crop 28


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(2):
        pixels = torch.randint(0, 256, (28, 28, 3), generator=g, dtype=torch.uint8).numpy()
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_overlay_colours_evidence_red_and_counter_evidence_blue() -> None:
    pixels = torch.full((3, 2, 3), 100, dtype=torch.uint8)
    heat = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.0, 0.0]])
    rgb = overlay(pixels, heat)
    assert rgb.shape == (3, 2, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0, 0] > 150 > rgb[2, 0, 0]  # positive: red
    assert rgb[2, 0, 2] > 150 > rgb[0, 0, 2]  # negative: blue
    assert rgb[:, 0, 1].tolist() == [100, 100, 100]  # nothing: the image in grey
    assert rgb[0, 1, 0] < rgb[0, 0, 0]  # half the value, half the colour


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_explain_json_and_picture(method: str, tiny_run: Path, images: list[Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "maps.png"
    code, stdout, err = cli_main(capsys, "explain", str(tiny_run), *map(str, images), "--method", method, "--out", str(out),
                                 "--json")  # fmt: skip
    assert code == 0, err
    results = json.loads(stdout)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for r in results:
        assert r["method"] == method and r["height"] == r["width"] == 28 and 0 < r["probability"] <= 1
        heat = torch.tensor(r["map"])
        assert heat.shape == (28, 28) and torch.isfinite(heat).all()
        if method == "gradcam":
            assert (heat >= 0).all()
    with Image.open(out) as im:
        assert im.size == (6 + 2 * 166, 6 + 2 * (160 + 14 + 6))  # two rows: image, map


def test_explain_a_chosen_class_and_plain_output(tiny_run: Path, images: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = cli_main(capsys, "explain", str(tiny_run), str(images[0]), "--class", "2")
    assert code == 0, err
    assert stdout.startswith(f"{images[0]}: gradcam of ") and "strongest at row" in stdout


def test_explain_bad_input_is_one_line(tiny_run: Path, images: list[Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "config.json").write_text(json.dumps({"kind": BASELINE_KIND}))
    assert_one_line_error(cli_main(capsys, "explain", str(baseline), str(images[0]))[::2], "has no layers to show")
    assert_one_line_error(cli_main(capsys, "explain", str(tiny_run), str(tmp_path / "none.png"))[::2], "not found")
    assert_one_line_error(cli_main(capsys, "explain", str(tiny_run), str(images[0]), "--class", "9")[::2], "out of range")
    assert_one_line_error(cli_main(capsys, "explain", str(tiny_run), str(images[0]), "--out", "x.jpg")[::2], ".png")
