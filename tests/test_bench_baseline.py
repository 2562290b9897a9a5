"""`alexnet bench baseline` runs end to end on a few images and reports every case (no timing is
asserted: speed claims come from the benchmark itself, not from tests)."""

from __future__ import annotations

import json

import pytest

from alexnet.cli import main
from alexnet.cli.bench_baseline_cmd import _print_table

pytest.importorskip("skimage.feature")


def test_bench_baseline_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "baseline", "--images", "24", "--reference-images", "8", "--repeat", "1"]
    assert main([*args, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [r["case"] for r in s["scales"]] == ["4 px", "7 px", "4+7 px (baseline)", "8 px colour"]
    for r in s["scales"]:
        assert r["max_abs_diff"] < 1e-5, r  # the same features as scikit-image's, in the same run
        assert r["ratio"] == pytest.approx(r["ours_images_per_sec"] / r["skimage_images_per_sec"])
        assert r["ours_cpu_ms_per_image"] > 0 and r["skimage_cpu_ms_per_image"] > 0
    assert "24 images of 1x28x28" in s["scales"][0]["data"] and "6 images of 3x64x64" in s["scales"][3]["data"]
    assert s["torch_threads"] >= 1 and len(s["load_average"]) == 2
    _print_table(s, repeat=1)  # the text output, of the same run (loading Fashion-MNIST twice is slow)
    text = capsys.readouterr().out
    assert "4+7 px (baseline)" in text and "8 px colour" in text and "load average" in text
