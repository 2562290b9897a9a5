"""``alexnet prepare --channels 1``: grey shards, their statistics, and reading them back."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.data import open_dataset
from alexnet.data.dataset import BatchPlan
from alexnet.data.prepare import Settings, prepare
from alexnet.data.prepare.convert import model_pixels
from alexnet.data.prepared import PreparedDataset


def _tree(root: Path, per_class: int = 6) -> Path:
    """Two classes of small colour images (a red-ish and a blue-ish gradient, with noise)."""
    rng = np.random.default_rng(0)
    for label, tint in (("red", (1.0, 0.3, 0.2)), ("blue", (0.2, 0.4, 1.0))):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = np.linspace(40, 220, 20)[None, :, None] * np.array(tint)[None, None, :]
            pixels = np.clip(base + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_grey_shards(tmp_path: Path, encoding: str) -> None:
    source = _tree(tmp_path / "src")
    out = tmp_path / "grey"
    with contextlib.redirect_stdout(None):
        assert main(["prepare", str(source), str(out), "--size", "16", "--channels", "1", "--encoding", encoding,
                     "--workers", "1", "--val-fraction", "0.3", "--no-progress"]) == 0  # fmt: skip
    m = json.loads((out / "manifest.json").read_text())
    assert m["channels"] == 1 and len(m["statistics"]["mean"]) == 1 and "eigenvalues" not in m["statistics"]
    assert np.load(out / "mean_image.npy").shape == (16, 16, 1)
    ds = open_dataset(str(out))
    assert isinstance(ds, PreparedDataset) and ds.info.channels == 1 and ds.colour_stats().eigvals is None
    images, _ = next(ds.batches("train", BatchPlan(100)))
    assert images.shape[1:] == (1, 16, 16) and images.dtype == torch.uint8
    if encoding == "raw":  # exactly the grey pixels predict gives a one-channel model
        got = [img.permute(1, 2, 0).numpy() for img in images]
        want = [model_pixels((source / f"{key}.png").read_bytes(), 1, 16) for key in ds.keys("train")]
        assert all(np.array_equal(w, g) for w, g in zip(want, got, strict=True))
        mean = float(np.mean([g.astype(np.float64).mean() for g in got]))
        assert m["statistics"]["mean"][0] == pytest.approx(mean)


def test_default_channels_keep_earlier_datasets_up_to_date(tmp_path: Path) -> None:
    """Datasets prepared before --channels existed have digests without it: still up to date."""
    identity = Settings().identity()
    assert "channels" not in identity and identity == {k: v for k, v in asdict(Settings()).items() if k != "channels"}
    assert Settings(channels=1).identity()["channels"] == 1
    source = _tree(tmp_path / "src", per_class=3)
    first = prepare(source, tmp_path / "rgb", settings=Settings(size=16), workers=1, progress=False)
    assert first.manifest["channels"] == 3 and not first.up_to_date
    again = prepare(source, tmp_path / "rgb", settings=Settings(size=16), workers=1, progress=False)
    assert again.up_to_date


def test_channels_flag_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tmp_path), str(tmp_path / "o"), "--channels", "2"])
    assert e.value.code == 2 and "--channels" in capsys.readouterr().err
