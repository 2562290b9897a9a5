"""`alexnet bench data` runs end to end on a small set and reports every figure (no timing is
asserted: speed claims come from the benchmark itself, not from tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alexnet.cli import main


def test_bench_data_json_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "data", "--images", "128", "--classes", "2", "--seconds", "0.01", "--repeat", "1",
            "--workers", "1", "--cache", str(tmp_path), "--json"]  # fmt: skip
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    for key in ("baseline_img_s", "ours_img_s", "ratio", "decode_limit_img_s", "loader_img_s"):
        assert row[key] > 0, key
    assert row["ratio"] == pytest.approx(row["ours_img_s"] / row["baseline_img_s"])
    assert row["images"] == 128 and row["batch_size"] == 128 and row["workers"] == 1
    cpu = row["cpu_ms_per_img"]
    assert set(cpu) == {"baseline", "ours", "loader", "decode_limit", "float32_copy_floor"}
    assert 0 < cpu["float32_copy_floor"] < cpu["loader"]
    ceiling = row["decode_limit_img_s"] * cpu["decode_limit"] / (cpu["loader"] + cpu["float32_copy_floor"])
    assert row["float_path_ceiling_img_s"] == pytest.approx(ceiling)
    assert row["float_path_ceiling_fraction_of_limit"] == pytest.approx(ceiling / row["decode_limit_img_s"])
    assert row["decoders"]["max_pixel_difference_tv_vs_pil"] <= 1
    generated = next(tmp_path.glob("jpeg-*"))
    assert (generated / "complete").is_file() and len(list(generated.rglob("*.jpg"))) == 128
    stamp = (generated / "complete").stat().st_mtime_ns
    assert main(args[:-1]) == 0  # text output; the generated set is reused, not rebuilt
    text = capsys.readouterr().out
    assert "baseline" in text and "decode limit" in text and "x baseline" in text and "ceiling" in text
    assert (generated / "complete").stat().st_mtime_ns == stamp


def test_bench_data_rejects_a_set_smaller_than_a_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "data", "--images", "64"]) == 2
    assert "at least one batch" in capsys.readouterr().err
