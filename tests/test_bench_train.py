"""`alexnet bench train`: the configuration table and the data-parallel scaling run, end to end
on tiny sizes (no timing is asserted: speed claims come from the benchmark itself)."""

from __future__ import annotations

import json

import pytest

from alexnet import models
from alexnet.bench.scaling import world_sizes
from alexnet.bench.step import CONFIG_NAMES, CUDA_ONLY_BY_DEFAULT, build_configs
from alexnet.cli import main
from tests.helpers.cli import assert_one_line_error, run_cli

# The JSON of a one-process `alexnet bench train` (baseline, ours, lrn-function on alexnet-small)
# is asserted in tests/test_device_check.py: scripts/device-check's dry run runs exactly that,
# and one run of it in the suite is enough.


def test_bench_configs() -> None:
    # ours in auto's precision, and ours in the other one (never both ours-fp32 and ours-bf16).
    assert [c.name for c in build_configs("alexnet", "bf16", "cuda")] == [n for n in CONFIG_NAMES if n != "ours-bf16"]
    cpu = build_configs("alexnet", "bf16", "cpu")  # compiling takes minutes on a CPU: only when named
    assert [c.name for c in cpu] == [n for n in CONFIG_NAMES if n not in (*CUDA_ONLY_BY_DEFAULT, "ours-bf16")]
    fp32 = {c.name: c for c in build_configs("alexnet", "fp32", "cpu", channels_last=False)}
    assert "ours-fp32" not in fp32 and fp32["ours-bf16"].precision == "bf16" and fp32["ours"].precision == "fp32"
    assert not fp32["ours"].channels_last and not fp32["ours-bf16"].channels_last  # auto's layout throughout
    by_name = {c.name: c for c in cpu}
    # The fair comparison: torchvision's alexnet with exactly ours' settings, precision included.
    ours, tv = by_name["ours"], by_name["torchvision"]
    assert tv.model == "torchvision" and (tv.precision, tv.channels_last, tv.tuned, tv.optimizer) == (
        ours.precision, ours.channels_last, ours.tuned, ours.optimizer)
    assert by_name["baseline"].precision == "fp32" and by_name["torch-lrn"].lrn == "torch"
    owt = build_configs("alexnet-owt", "fp32", "cpu")  # no LRN to swap
    assert [c.name for c in owt] == ["baseline", "ours", "torchvision", "ours-bf16"] and owt[0].model == "torchvision"
    small = build_configs("alexnet-small", "bf16", "cpu")
    assert small[0].model == "alexnet-small"  # torchvision's alexnet cannot take 28 px
    assert "torchvision" not in {c.name for c in small}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "vgg"], "unknown model"),
        (["--batch-size", "0"], "batch-size"),
        (["--steps", "0"], "steps"),
        (["--configs", "fastest"], "configs"),
        (["--nproc", "0"], "nproc"),
    ],
)
def test_bench_train_user_errors(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "train", "--device", "cpu", *args])  # fails before any worker starts
    assert_one_line_error((code, capsys.readouterr().err), fragment)


def test_bench_train_nproc_2_runs_torchrun_with_ddp() -> None:
    # Real torchrun launches with 1 and 2 gloo processes; each rank reports its own timing.
    proc = run_cli("bench", "train", "--nproc", "2", "--steps", "1", "--warmup", "1", "--batch-size", "4",
                   "--model", "alexnet-small", "--device", "cpu", "--json", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    runs = result["runs"]
    assert [r["world_size"] for r in runs] == [1, 2]
    assert [len(r["per_process_img_s"]) for r in runs] == [1, 2]
    assert runs[0]["efficiency"] == pytest.approx(1.0)
    for r in runs:
        assert r["total_img_s"] > 0 and all(v > 0 for v in r["per_process_img_s"])
        assert r["efficiency"] == pytest.approx(r["total_img_s"] / (r["world_size"] * runs[0]["total_img_s"]))
    assert runs[1]["allreduce_ms"] > 0  # a real all-reduce over gloo was timed
    assert result["gradient_numel"] == models.count_parameters(models.create("alexnet-small", 1000))


def test_world_sizes() -> None:
    assert world_sizes(1) == [1]
    assert world_sizes(2) == [1, 2]
    assert world_sizes(6) == [1, 2, 4, 6]
    assert world_sizes(8) == [1, 2, 4, 8]
