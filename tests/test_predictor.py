"""One predictor for every kind of model, and one input convention.

``alexnet predict X photos/ --json`` gives the same records for a trained run, its ONNX export,
a 2011 baseline and a Caffe import (folders, ``-`` and a bad image alike); ONNX and PyTorch agree
on every image; the convention survives checkpoints and ONNX files; the one eval transform
gives the numbers the dataset pipeline gives.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.baselines import BaselineConfig, fit_baseline
from alexnet.checkpoint import read_checkpoint
from alexnet.data.convention import InputConvention, InputNorm, eval_transform
from alexnet.data.dataset import DatasetInfo, TensorDataset
from alexnet.data.images import load_image
from alexnet.data.pipeline import InputPipeline
from alexnet.data.prepare.convert import model_pixels
from alexnet.data.presets import TrainAugment
from alexnet.evaluation import load_model
from alexnet.inference import open_predictor
from alexnet.interop.caffe import import_caffe
from alexnet.interop.onnx_model import METADATA_KEY, OnnxModel, export_onnx
from alexnet.interop.runs import write_run
from tests.helpers.caffe import caffe_layers, write_files
from tests.helpers.cli import cli_main
from tests.helpers.interop import make_run, real_images

pytest.importorskip("onnxruntime")  # the ONNX kind; alexnet.interop.onnx_model imports it late

KINDS = ("run", "onnx", "baseline", "caffe")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 5 colour photos (one in a sub-folder) and one file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    files = real_images(folder / "album", 5, colour=True)
    (folder / "album" / "more").mkdir()
    shutil.move(files[-1], folder / "album" / "more" / Path(files[-1]).name)
    (folder / "album" / "broken.png").write_bytes(b"\x89PNG not really")
    return folder / "album"


@pytest.fixture(scope="module")
def models_by_kind(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    run = make_run(root / "run", "alexnet-small", mean_image=True)
    export_onnx(run, root / "run.onnx")
    fit_baseline(BaselineConfig(data="synthetic:classes=4,size=28,train=48,val=16", features="raw", max_iter=30),
                 root / "baseline", progress=False)  # fmt: skip
    proto, weights, mean = write_files(root / "caffe-files", caffe_layers(np.random.default_rng(0)), False,
                                       np.random.default_rng(1).uniform(80, 150, (3, 256, 256)))  # fmt: skip
    import_caffe(proto, weights, root / "caffe", mean)
    return {"run": run, "onnx": root / "run.onnx", "baseline": root / "baseline", "caffe": root / "caffe"}


@pytest.mark.parametrize("kind", KINDS)
def test_predict_gives_one_record_shape_for_every_kind(kind: str, models_by_kind: dict[str, Path], photos: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    model = str(models_by_kind[kind])
    code, out, err = cli_main(capsys, "predict", model, str(photos), "--json", "--topk", "3")
    assert code == 2, err  # one image failed: said, and the others answered
    results = json.loads(out)
    images = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    assert [r["image"] for r in results] == images  # recursive, sorted, the bad one in its place
    bad = next(r for r in results if r["image"].endswith("broken.png"))
    assert set(bad) == {"image", "error"} and "cannot read image" in bad["error"]
    classes = open_predictor(model).classes
    keys = {"class", "index", "probability"} | ({"score"} if kind == "baseline" else set())
    for r in results:
        if r is bad:
            continue
        assert set(r) == {"image", "predictions"} and len(r["predictions"]) == 3
        for p in r["predictions"]:
            assert set(p) == keys and classes[p["index"]] == p["class"] and 0 <= p["probability"] <= 1
        probabilities = [p["probability"] for p in r["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True)


@pytest.mark.parametrize("kind", KINDS)
def test_stdin_and_many_files_work_for_every_kind(kind: str, models_by_kind: dict[str, Path], photos: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    predictor = open_predictor(models_by_kind[kind], precision="fp32")
    files = sorted(str(p) for p in photos.glob("*.jpg"))[:2]
    data = Path(files[0]).read_bytes()
    both = predictor.predict([*files, "-"], 2, stdin=io.BytesIO(data))
    assert [r["image"] for r in both] == [*files, "<stdin>"]
    assert both[2]["predictions"] == both[0]["predictions"]  # the same bytes, the same answer


def test_onnx_and_torch_agree_on_top1_for_every_image_of_a_folder(models_by_kind: dict[str, Path], photos: Path) -> None:
    torch_answers = open_predictor(models_by_kind["run"], "cpu", "fp32").predict([str(photos)], 1)
    onnx_answers = open_predictor(models_by_kind["onnx"]).predict([str(photos)], 1)
    answered = [(a, b) for a, b in zip(torch_answers, onnx_answers) if "predictions" in a]
    assert len(answered) == 5 and all("predictions" in b for _, b in answered)
    for a, b in answered:
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"], a["image"]
        assert a["predictions"][0]["probability"] == pytest.approx(b["predictions"][0]["probability"], abs=1e-5)


def test_commands_that_need_a_network_say_so_for_onnx_and_baselines(models_by_kind: dict[str, Path], photos: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    image = str(next(photos.glob("*.jpg")))
    for kind, words in (("onnx", "an exported ONNX model"), ("baseline", "a baseline run (no network)")):
        code, _, err = cli_main(capsys, "similar", str(models_by_kind[kind]), image)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "needs a torch network" in lines[0] and words in lines[0], err
    assert open_predictor(models_by_kind["run"]).require_network("similar").model is not None


def _unusual_convention() -> InputConvention:
    gen = torch.Generator().manual_seed(0)
    norm = InputNorm((101.0, 102.0, 103.0), (1.0, 2.0, 3.0), torch.rand(3, 32, 32, generator=gen) * 255)
    return InputConvention(3, 32, 28, norm, channel_order="BGR", pixel_scale=1.0)


def test_convention_survives_checkpoint_and_onnx_round_trips(tmp_path: Path) -> None:
    from alexnet import models

    convention = _unusual_convention()
    write_run(tmp_path / "run", models.create("alexnet-small", 4), "alexnet-small", {}, list("abcd"), convention, "test",
              {"from": "tests"})  # fmt: skip
    assert read_checkpoint(tmp_path / "run").data.convention.same_as(convention)
    assert load_model(tmp_path / "run", torch.device("cpu")).convention.same_as(convention)
    export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    stored = OnnxModel(tmp_path / "m.onnx").convention
    assert stored.same_as(convention) and (stored.channel_order, stored.pixel_scale) == ("BGR", 1.0)
    assert not stored.same_as(InputConvention(3, 32, 28, convention.norm))  # the order and scale count

    # Files from before the record load with the convention their fields describe.
    raw = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    del raw["data"]["convention"]
    torch.save(raw, tmp_path / "old.pt")
    assert read_checkpoint(tmp_path / "old.pt").data.convention.same_as(InputConvention(3, 32, 28, convention.norm))
    version_1 = {"format": 1, "layout": "NCHW", "colour": "RGB", "pixel_range": [0, 255], "channels": 3, "image_size": 32,
                 "crop": 28, "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0], "mean_image": None}  # fmt: skip
    old = InputConvention.from_json(json.dumps(version_1))
    assert (old.channel_order, old.pixel_scale, old.crop, old.norm.std) == ("RGB", 255.0, 28, (4.0, 5.0, 6.0))
    assert METADATA_KEY == "alexnet.preprocessing"  # the key older exports carry


def test_channel_order_and_pixel_scale_change_what_the_network_sees(photos: Path) -> None:
    image = next(photos.glob("*.jpg"))
    rgb = InputConvention(3, 32, 28, InputNorm((0.0,) * 3, (1.0,) * 3))
    bgr = InputConvention(3, 32, 28, rgb.norm, channel_order="BGR", pixel_scale=1.0)
    assert torch.equal(load_image(image, bgr), load_image(image, rgb).flip(0))
    batch = load_image(image, rgb)[None]
    assert torch.allclose(eval_transform(bgr).normalize(batch), batch.float() / 255)


@pytest.mark.parametrize("mean_image", [False, True], ids=["mean-std", "mean-image"])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_eval_transform_matches_the_dataset_pipeline(mean_image: bool, layout: str, photos: Path) -> None:
    """``eval``'s pipeline (batched gather, or the fused CPU path on channels_last batches) and
    the one eval transform give the same numbers for the same pictures."""
    files = sorted(photos.glob("*.jpg"))
    side, crop = 72, 64
    full = torch.stack([torch.from_numpy(model_pixels(f.read_bytes(), 3, side).copy()).permute(2, 0, 1) for f in files])
    if layout == "channels-last":
        full = full.contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    norm = InputNorm((120.0, 110.0, 100.0), (60.0, 55.0, 50.0), torch.rand(3, side, side, generator=gen) * 255 if mean_image else None)
    labels = torch.zeros(len(files), dtype=torch.int64)
    info = DatasetInfo("photos", ("photo",), 3, side, norm.mean, norm.std)
    dataset = TensorDataset(info, {"train": (full, labels), "val": (full, labels)}, TrainAugment(crop), crop)
    expected = InputPipeline(dataset, torch.device("cpu"), channels_last=False, seed=0, norm=norm).eval(full)
    convention = InputConvention(3, side, crop, norm)
    got = eval_transform(convention).normalize(torch.stack([load_image(f, convention) for f in files]))
    torch.testing.assert_close(got, expected.contiguous(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_the_server_answers_every_kind_with_the_cli_record(kind: str, models_by_kind: dict[str, Path], photos: Path) -> None:
    from alexnet.serving.app import ServeConfig, ServedModel

    photo = next(photos.glob("*.jpg"))
    served = ServedModel(ServeConfig(source=str(models_by_kind[kind]), precision="fp32"))
    answer = served.topk(served.decode(photo.read_bytes(), photo.name)[None], 2)[0]
    expected = open_predictor(models_by_kind[kind], precision="fp32").predict([str(photo)], 2)[0]["predictions"]
    assert [set(p) for p in answer] == [set(p) for p in expected] and [p["index"] for p in answer] == [p["index"] for p in expected]
    assert [p["probability"] for p in answer] == pytest.approx([p["probability"] for p in expected], abs=1e-6)
    assert served.info()["kind"] == open_predictor(models_by_kind[kind]).kind


def test_eval_refuses_a_convention_the_dataset_pipeline_cannot_feed(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from alexnet import models

    write_run(tmp_path / "bgr", models.create("alexnet-small", 4), "alexnet-small", {}, list("abcd"), _unusual_convention(),
              "test", {"from": "tests"})  # fmt: skip
    code, _, err = cli_main(capsys, "eval", str(tmp_path / "bgr"), "--data", "synthetic:classes=4,size=32,train=8,val=8")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "takes BGR pixels scaled to 0-1" in lines[0], err
