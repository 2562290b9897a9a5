"""Fine-tuning across what differs: conv1 adapted between grayscale and RGB (with the input
normalisation), data fitted to the weights' input size, and both through ``alexnet train``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from alexnet import models
from alexnet.cli import main
from alexnet.data.dataset import DatasetInfo, TensorDataset
from alexnet.data.pipeline import InputNorm, InputPipeline
from alexnet.data.presets import TrainAugment
from alexnet.data.resize import ResizedDataset, fit_input_size, resize_batch
from alexnet.errors import UserError
from alexnet.evaluation import evaluate_checkpoints
from alexnet.training import warmstart

TINY = {"widths": [8, 16, 24, 24, 16], "fc_width": 32, "dropout": 0.0}
TINY_FLAGS = ["--widths", "8,16,24,24,16", "--fc-width", "32", "--batch-size", "16", "--no-progress", "--workers", "0",
              "--precision", "fp32"]  # fmt: skip
GREY_SOURCE = "synthetic:classes=4,size=28,train=64,val=16,channels=1"


def _dataset(images: torch.Tensor, norm_side: int | None = None) -> TensorDataset:
    c, side = images.shape[1], images.shape[-1]
    info = DatasetInfo("t", ("a", "b"), c, side, (0.0,) * c, (1.0,) * c)
    labels = torch.zeros(len(images), dtype=torch.int64)
    return TensorDataset(info, {"train": (images, labels), "val": (images, labels)}, TrainAugment(side), side)


def _logits(model: torch.nn.Module, images: torch.Tensor, norm: InputNorm) -> torch.Tensor:
    """The model's logits on uint8 ``images`` through the project's input pipeline (centre crop + ``norm``)."""
    pipeline = InputPipeline(_dataset(images), torch.device("cpu"), False, 0, norm=norm)
    with torch.no_grad():
        return model.eval()(pipeline.eval(images)).double()


def _pair(name: str, have: int, want: int, side: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A source net with ``have`` input channels (random, non-trivial weights) and a fresh one with ``want``."""
    torch.manual_seed(0)
    size = {"image_size": side} if name == "alexnet-small" else {}
    source = models.create(name, 5, in_channels=have, **size)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.05)
    return source, models.create(name, 5, in_channels=want, **size)


def _adapt(
    source: torch.nn.Module, target: torch.nn.Module, name: str, norm: InputNorm, side: int
) -> tuple[InputNorm, str]:
    channels = source.layers_by_role()["conv1"].in_channels
    weights = warmstart.Weights("src", name, source.state_dict(), {}, (), channels, side, side, norm)
    adapted, note = warmstart.adapt_weights(target, weights)
    target.load_state_dict(adapted.state)
    assert adapted.channels == target.layers_by_role()["conv1"].in_channels
    return adapted.norm, note


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding (relative to the logits' scale)."""
    return float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()) + 1e-6


@pytest.mark.parametrize("name,side", [("alexnet-small", 28), ("alexnet", 227), ("alexnet-owt", 224)])
@pytest.mark.parametrize("normalize", ["channel", "mean-image"])
def test_grey_weights_on_rgb_give_the_original_logits(name: str, side: int, normalize: str) -> None:
    grey, rgb = _pair(name, 1, 3, side)
    torch.manual_seed(1)
    norm = InputNorm((33.0,), (76.0,))
    if normalize == "mean-image":
        norm = InputNorm((33.0,), (1.0,), torch.rand(1, side, side) * 255)
    adapted_norm, note = _adapt(grey, rgb, name, norm, side)
    images = torch.randint(0, 256, (3, 1, side, side), dtype=torch.uint8)
    assert _close(_logits(grey, images, norm), _logits(rgb, images.repeat(1, 3, 1, 1), adapted_norm))
    assert adapted_norm.mean == norm.mean * 3 and adapted_norm.std == norm.std * 3
    assert "grayscale to RGB" in note and "exact" in note


@pytest.mark.parametrize("name,side", [("alexnet", 227), ("alexnet-small", 28), ("alexnet-owt", 224)])
def test_rgb_weights_on_grey_give_the_original_logits_where_the_maths_allows(name: str, side: int) -> None:
    rgb, grey = _pair(name, 3, 1, side)
    torch.manual_seed(2)
    images = torch.randint(0, 256, (3, 1, side, side), dtype=torch.uint8)
    # Equal channel means: exact everywhere, padded conv1 or not (stds may differ).
    even = InputNorm((110.0, 110.0, 110.0), (60.0, 65.0, 70.0))
    adapted, note = _adapt(rgb, grey, name, even, side)
    assert _close(_logits(rgb, images.repeat(1, 3, 1, 1), even), _logits(grey, images, adapted))
    assert "RGB to grayscale" in note and "border" not in note
    # torchvision-like means: exact for the paper's unpadded conv1; for a padded conv1 the
    # zero padding is the colour (m_R, m_G, m_B) to the original, which no grey input can be.
    rgb, grey = _pair(name, 3, 1, side)
    tv = InputNorm((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))
    adapted, note = _adapt(rgb, grey, name, tv, side)
    a, b = _logits(rgb, images.repeat(1, 3, 1, 1), tv), _logits(grey, images, adapted)
    padded = models.create(name, 2).layers_by_role()["conv1"].padding != (0, 0)
    assert adapted.mean == (pytest.approx(sum(tv.mean) / 3),) and adapted.std == (pytest.approx(sum(tv.std) / 3),)
    if padded:
        assert "away from conv1's zero-padded border" in note
        assert float((a - b).abs().max()) < 0.05 * float(a.abs().max())
    else:
        assert _close(a, b) and "border" not in note


def test_rgb_mean_image_on_grey_is_exact_for_a_grey_mean_image() -> None:
    rgb, grey = _pair("alexnet", 3, 1, 227)
    grey_mean = torch.rand(1, 227, 227) * 255
    norm = InputNorm((100.0,) * 3, (1.0,) * 3, grey_mean.repeat(3, 1, 1))
    adapted, note = _adapt(rgb, grey, "alexnet", norm, 227)
    images = torch.randint(0, 256, (2, 1, 227, 227), dtype=torch.uint8)
    assert _close(_logits(rgb, images.repeat(1, 3, 1, 1), norm), _logits(grey, images, adapted))
    assert torch.allclose(adapted.mean_image, grey_mean) and "exact" in note


def test_only_one_and_three_channels_adapt() -> None:
    weights = warmstart.Weights("w.pt", "alexnet-small", {}, {}, (), 1, 28, 28, InputNorm((0.0,), (1.0,)))
    warmstart.check_channels(weights, 3)
    with pytest.raises(UserError, match=r"alexnet prepare SOURCE OUT --channels 1"):
        warmstart.check_channels(weights, 4)


# ---------------------------------------------------------------- input size


def _weights(crop: int, image_size: int | None = None, mean_image: torch.Tensor | None = None) -> warmstart.Weights:
    norm = InputNorm((0.0,), (1.0,), mean_image)
    return warmstart.Weights("w.pt", "alexnet-small", {}, {}, (), 1, image_size or crop, crop, norm)


def test_input_size_for() -> None:
    size_for = warmstart.input_size_for
    assert size_for(_weights(28), 32, 28, "d") is None  # 32 px prepared images already give 28 px crops
    assert size_for(_weights(28), 28, 28, "d") is None
    assert size_for(_weights(28), 32, 32, "d") == (32, 28)  # crop: 28 of 32 still frames the picture
    assert size_for(_weights(224, 256), 256, 227, "d") == (256, 224)  # torchvision's crop of a paper-size image
    assert size_for(_weights(28), 72, 64, "d") == (32, 28)  # resized so 28 frames what 64 framed
    assert size_for(_weights(32), 28, 28, "d") == (32, 32)  # smaller images are enlarged
    assert size_for(_weights(224, 256), 28, 28, "d") == (224, 224)  # 8x: Fashion-MNIST for torchvision's weights
    # a mean image fixes the image side: resized to it, then the weights' crop
    assert size_for(_weights(227, 256, torch.zeros(1, 256, 256)), 32, 28, "d") == (256, 227)
    with pytest.raises(UserError, match=r"train from scratch instead \(alexnet train --data d\)"):
        size_for(_weights(227, 256), 8, 8, "d")  # 28x enlargement: no sensible mapping
    with pytest.raises(UserError, match="enlarging them 32x"):
        size_for(_weights(227, 256, torch.zeros(1, 256, 256)), 8, 8, "d")  # a mean image's side too


def test_resized_dataset() -> None:
    images = torch.arange(2 * 3 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 28, 28)
    base = _dataset(images)
    base.train_augment = TrainAugment(28, pad=2)
    fitted = fit_input_size(base, 56, 48)
    assert isinstance(fitted, ResizedDataset) and fitted.info.image_size == 56 and fitted.info.channels == 3
    assert fitted.eval_crop == 48 and fitted.train_augment.crop == 48 and fitted.train_augment.pad == 4
    from alexnet.data.dataset import BatchPlan

    ((batch, labels),) = fitted.batches("train", BatchPlan(2))
    assert batch.shape == (2, 3, 56, 56) and batch.dtype == torch.uint8 and len(labels) == 2
    assert torch.equal(
        resize_batch(torch.full((1, 1, 8, 8), 77, dtype=torch.uint8), 20),
        torch.full((1, 1, 20, 20), 77, dtype=torch.uint8),
    )
    assert fitted.colour_stats().mean_image.shape == (3, 56, 56)
    same = fit_input_size(_dataset(images), 28, 24)  # only the crop changes: the same dataset
    assert not isinstance(same, ResizedDataset) and same.eval_crop == 24 and same.train_augment.crop == 24


# ---------------------------------------------------------------- through `alexnet train`


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny grayscale 28 px alexnet-small run to start from."""
    run = tmp_path_factory.mktemp("grey") / "run"
    with contextlib.redirect_stdout(None):
        assert main(["train", "--data", GREY_SOURCE, *TINY_FLAGS, "--epochs", "1", "--out", str(run)]) == 0
    return run


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def test_grey_run_onto_rgb_data_keeps_frozen_weights(
    grey_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "rgb"
    capsys.readouterr()
    data = "synthetic:classes=3,size=32,train=48,val=16,channels=3,seed=5"  # RGB, 32 px: conv1 and size differ
    assert main(["train", "--data", data, *TINY_FLAGS, "--epochs", "2", "--lr", "0.05", "--init-from", str(grey_run),
                 "--freeze", "features", "--out", str(run)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    src, new = _last(grey_run), _last(run)
    assert new["data"]["channels"] == 3 and new["data"]["crop"] == 28 and new["data"]["image_size"] == 32
    w = src["model"]["features.conv1.weight"]
    assert torch.equal(new["model"]["features.conv1.weight"], (w.double().repeat(1, 3, 1, 1) / 3).float())
    for key, value in src["model"].items():  # everything else below fc8 is bit-identical
        if not key.startswith(("classifier.fc8.", "features.conv1.weight")):
            assert torch.equal(value, new["model"][key]), key
    assert new["data"]["mean"] == src["data"]["mean"] * 3 and new["data"]["std"] == src["data"]["std"] * 3
    notes = json.loads((run / "config.json").read_text())["warm_start"]
    assert "grayscale to RGB" in notes["conv1"] and "cropped to 28 px" in notes["input_size"]
    assert notes["conv1"] in out and notes["input_size"] in out  # each stated in one log line
    # Resumed (one more epoch), the run keeps its input size, normalisation and record.
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    again = _last(run)
    assert again["data"]["crop"] == 28 and again["data"]["mean"] == new["data"]["mean"]
    assert json.loads((run / "config.json").read_text())["warm_start"] == notes


def test_rgb_run_onto_grey_data_resized(tmp_path: Path) -> None:
    source = tmp_path / "rgb-src"
    rgb = "synthetic:classes=4,size=28,train=32,val=16,channels=3"
    with contextlib.redirect_stdout(None):
        assert main(["train", "--data", rgb, *TINY_FLAGS, "--epochs", "1", "--out", str(source)]) == 0
        run = tmp_path / "grey"
        grey = "synthetic:classes=3,size=16,train=32,val=16,channels=1,seed=3"  # 16 px: enlarged to 28
        assert main(["train", "--data", grey, *TINY_FLAGS, "--epochs", "1", "--init-from", str(source),
                     "--freeze", "conv", "--out", str(run)]) == 0  # fmt: skip
    new = _last(run)
    assert new["data"]["channels"] == 1 and new["data"]["image_size"] == 28 and new["data"]["crop"] == 28
    assert new["model"]["features.conv1.weight"].shape[1] == 1 and len(new["data"]["mean"]) == 1
    notes = json.loads((run / "config.json").read_text())["warm_start"]
    assert "RGB to grayscale" in notes["conv1"] and "resized from 16 to 28 px" in notes["input_size"]
    # `alexnet eval` fits its data the same way (the run's data gives 16 px crops, the model takes 28)
    result = evaluate_checkpoints([str(run)], precision_name="fp32", workers=0)
    assert result["n"] == 16 and "resized to 28 px" in result["input_size"]
    assert result["top1_err"] == pytest.approx(_last(run)["progress"]["history"][-1]["val_top1_err"], abs=1e-6)
    from alexnet.evaluation.features import open_session  # and so do `features` and `similar`

    assert open_session(str(run), precision_name="fp32").dataset.eval_crop == 28


def test_linear_probe_keeps_the_recipe_lr(grey_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --lr a linear probe trains at its recipe's rate: the step-scaled default is for whole networks."""
    from alexnet.training.recipes import get_recipe

    run = tmp_path / "probe"
    capsys.readouterr()
    assert main(["train", "--data", GREY_SOURCE, *TINY_FLAGS, "--epochs", "1", "--init-from", str(grey_run),
                 "--freeze", "features", "--out", str(run)]) == 0  # fmt: skip
    assert _last(run)["config"]["recipe"]["lr"] == get_recipe("small").lr
    assert "--freeze features trains a linear classifier" in capsys.readouterr().out
