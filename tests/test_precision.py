"""The precision and layout ``auto`` chooses (alexnet/precision.py), for each CPU class, from
flags and measurements given by the test, not read from this machine."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from alexnet import precision as P
from alexnet.errors import UserError
from alexnet.precision import Choice, CpuFlags, Measurement, Timing, candidates, decide

AVX2 = CpuFlags(avx2=True, avx512=False, avx512_bf16=False, amx=False)
AVX512 = CpuFlags(avx2=True, avx512=True, avx512_bf16=False, amx=False)  # Skylake-SP .. Ice Lake
AVX512_BF16 = CpuFlags(avx2=True, avx512=True, avx512_bf16=True, amx=False)  # Zen 4, Cooper Lake
AMX = CpuFlags(avx2=True, avx512=True, avx512_bf16=True, amx=True)  # Sapphire Rapids and later


def measured(**seconds: float) -> Measurement:
    """``fp32_cl=0.1, bf16_nchw=0.2, ...`` -> a Measurement with those timings."""
    timings = []
    for name, t in seconds.items():
        p, layout = name.split("_")
        timings.append(Timing(p, layout == "cl", t))
    return Measurement("alexnet-small", 32, tuple(timings))


def test_each_class_is_named_from_its_flags() -> None:
    assert [f.cpu_class for f in (AVX2, AVX512, AVX512_BF16, AMX)] == ["avx2", "avx512", "avx512-bf16", "amx"]
    assert not AVX512.native_bf16 and AVX512_BF16.native_bf16 and AMX.native_bf16


def test_what_a_measurement_times_on_each_class() -> None:
    assert [cl for _, cl in candidates(AVX2)] == [True, False]  # the layout is measured on every class
    assert {p for p, _ in candidates(AVX2)} == {p for p, _ in candidates(AVX512)} == {"fp32"}  # no bf16 to emulate
    assert {p for p, _ in candidates(AVX512_BF16)} == {"fp32", "bf16"}  # the flags cannot decide
    assert {p for p, _ in candidates(AMX)} == {"bf16"}
    assert len(candidates(AVX512_BF16)) == 4


@pytest.mark.parametrize("flags", [AVX2, AVX512])
def test_no_native_bf16_means_fp32(flags: CpuFlags) -> None:
    unmeasured = decide(flags, None)
    assert (unmeasured.precision, unmeasured.channels_last) == ("fp32", True)
    assert "emulates bf16" in unmeasured.reason
    layout_only = decide(flags, measured(fp32_cl=0.10, fp32_nchw=0.12))
    assert (layout_only.precision, layout_only.channels_last) == ("fp32", True)
    assert layout_only.channels_last_vs_not == pytest.approx(1.2) and layout_only.bf16_vs_fp32 is None


def test_the_avx512_class_measured_as_in_the_field_picks_fp32() -> None:
    # fp32 1,115 img/s vs emulated bf16 654 img/s: bf16 at 0.59x.
    c = decide(AVX512_BF16, measured(fp32_cl=1 / 1115, bf16_cl=1 / 654))
    assert c.precision == "fp32" and c.bf16_vs_fp32 == pytest.approx(0.59, abs=0.01)
    assert "0.59x" in c.describe() and c.describe().startswith("fp32, channels_last: ")


def test_avx512_bf16_without_amx_follows_the_measurement() -> None:
    faster = decide(AVX512_BF16, measured(fp32_cl=0.10, fp32_nchw=0.11, bf16_cl=0.06, bf16_nchw=0.07))
    assert (faster.precision, faster.channels_last) == ("bf16", True)
    assert faster.bf16_vs_fp32 == pytest.approx(0.10 / 0.06)
    # Within the margin fp32 (the exact format) stays.
    close = decide(AVX512_BF16, measured(fp32_cl=0.100, bf16_cl=0.097))
    assert close.precision == "fp32" and "no faster" in close.reason
    # Unmeasured, the flags alone cannot tell: fp32.
    assert decide(AVX512_BF16, None).precision == "fp32"


def test_amx_means_bf16() -> None:
    assert decide(AMX, None).precision == "bf16"
    c = decide(AMX, measured(bf16_cl=0.05, bf16_nchw=0.04))
    assert (c.precision, c.channels_last) == ("bf16", False)  # contiguous measured 25% faster


def test_channels_last_stays_unless_contiguous_is_clearly_faster() -> None:
    assert decide(AVX2, measured(fp32_cl=0.100, fp32_nchw=0.098)).channels_last is True
    assert decide(AVX2, measured(fp32_cl=0.100, fp32_nchw=0.090)).channels_last is False


def test_forced_settings_win_over_flags_and_measurements() -> None:
    m = measured(fp32_cl=0.10, fp32_nchw=0.05, bf16_cl=0.01, bf16_nchw=0.01)
    c = decide(AVX512_BF16, m, precision="fp32", channels_last=True)
    assert (c.precision, c.channels_last, c.forced) == ("fp32", True, ("precision", "channels_last"))
    assert decide(AVX2, None, precision="bf16").precision == "bf16"
    with pytest.raises(UserError, match="unknown precision"):
        decide(AVX2, None, precision="fp16")


def _timings(values: tuple[float, ...], precisions: tuple[str, ...]) -> Measurement:
    settings = [(p, cl) for p in precisions for cl in (True, False)]
    return Measurement("m", 1, tuple(Timing(p, cl, t) for (p, cl), t in zip(settings, values)))


@pytest.mark.parametrize("flags", [AVX2, AVX512])
def test_auto_never_returns_bf16_without_native_bf16_unless_measured_faster(flags: CpuFlags) -> None:
    grid = (0.05, 0.09, 0.1, 0.104, 0.2)
    assert decide(flags, None).precision == "fp32"
    for values in itertools.product(grid, repeat=2):  # what such a CPU measures: fp32 only
        assert decide(flags, _timings(values, ("fp32",))).precision == "fp32"
    for values in itertools.product(grid, repeat=4):  # even given bf16 timings: only a clear win
        m = _timings(values, ("fp32", "bf16"))
        c = decide(flags, m)
        if c.precision == "bf16":
            assert m.fastest("bf16") * (1 + P.MARGIN) <= m.fastest("fp32")


@pytest.mark.parametrize(
    ("onednn", "capability", "expected"),
    [
        ("AVX2", "AVX2", "avx2"),
        ("AVX512_CORE", "AVX512", "avx512"),
        ("AVX512_CORE_VNNI", "AVX512", "avx512"),
        ("AVX512_CORE_BF16", "AVX512", "avx512-bf16"),
        ("", "AVX2", "avx2"),
        ("", "AVX512", "amx"),
    ],
)
def test_isa_limits_cap_the_flags(monkeypatch: pytest.MonkeyPatch, onednn: str, capability: str, expected: str) -> None:
    # How the other classes are emulated on one machine: oneDNN's and ATen's ISA limits.
    for name in ("_is_avx2_supported", "_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
    flags = P.cpu_flags()
    assert flags.cpu_class == expected
    assert (flags.isa_limit is None) == (expected == "amx")


def test_choose_measures_once_then_reads_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ALEXNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P, "cpu_flags", lambda: AVX512_BF16)
    calls = []

    def fake_measure(model: str, settings: tuple) -> Measurement:
        calls.append((model, settings))
        return measured(fp32_cl=0.10, fp32_nchw=0.20, bf16_cl=1 / 0.59 * 0.10, bf16_nchw=0.3)

    monkeypatch.setattr(P, "measure", fake_measure)
    first = P.choose("auto", None, torch.device("cpu"), "alexnet-small")
    again = P.choose("auto", None, torch.device("cpu"), "alexnet-small")
    assert len(calls) == 1 and calls[0][1] == candidates(AVX512_BF16)
    assert (first.precision, first.cached, again.cached) == ("fp32", False, True)
    assert again.measurement == first.measurement and "measured 0.59x fp32" in again.describe()
    [entry] = (tmp_path / "precision").iterdir()
    stored = json.loads(entry.read_text())
    assert stored["key"]["model"] == "alexnet-small" and stored["key"]["torch"] == torch.__version__
    # Forcing both settings measures nothing; another model is measured on its own.
    assert P.choose("bf16", False, torch.device("cpu"), "alexnet").forced == ("precision", "channels_last")
    P.choose("auto", None, torch.device("cpu"), "alexnet")
    assert [c[0] for c in calls] == ["alexnet-small", "alexnet"]
    assert P.choose("auto", None, torch.device("cpu"), "alexnet-small", refresh=True).cached is False


def test_the_choice_records_itself() -> None:
    c = decide(AVX512_BF16, measured(fp32_cl=0.10, bf16_cl=0.06))
    d = c.to_dict()
    assert d["precision"] == "bf16" and d["cpu_class"] == "avx512-bf16" and d["log"] == c.describe()
    assert Measurement.from_dict(json.loads(json.dumps(d["measurement"]))) == c.measurement
    assert isinstance(c, Choice)


def test_a_real_measurement_on_this_machine_is_well_formed() -> None:
    # No timing is asserted: only that every asked setting was timed, the threads restored.
    threads = torch.get_num_threads()
    m = P.measure("alexnet-small", (("fp32", True), ("fp32", False)), seconds=0.0)
    assert [(t.precision, t.channels_last) for t in m.timings] == [("fp32", True), ("fp32", False)]
    assert all(t.seconds > 0 for t in m.timings) and m.rounds >= P.MIN_ROUNDS and m.batch >= 1
    assert torch.get_num_threads() == threads


def test_a_run_records_its_choice_and_keeps_it_on_resume(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from alexnet.training.recipes import SMALL
    from alexnet.training.trainer import TrainConfig, train

    monkeypatch.setenv("ALEXNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(P, "cpu_flags", lambda: AVX512)  # AVX512 without bf16: fp32, layout measured
    monkeypatch.setattr(P, "measure", lambda model, settings: measured(fp32_cl=0.12, fp32_nchw=0.10))
    recipe = SMALL.with_overrides(epochs=1, batch_size=32)
    cfg = TrainConfig(data="synthetic:classes=4,size=28,train=128,val=32,channels=1", recipe=recipe, out=str(tmp_path / "run"),
                      progress=False, model_options={"widths": [8, 8, 8, 8, 8], "fc_width": 32})  # fmt: skip
    train(cfg)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert (resolved["precision"], resolved["channels_last"]) == ("fp32", False)  # contiguous measured 1.2x
    assert resolved["precision_choice"]["cpu_class"] == "avx512" and "emulates bf16" in resolved["precision_choice"]["log"]
    # The machine now answers otherwise: the resumed run keeps what it started with.
    monkeypatch.setattr(P, "cpu_flags", lambda: AMX)
    monkeypatch.setattr(P, "measure", lambda model, settings: measured(bf16_cl=0.05, bf16_nchw=0.10))
    train(dataclasses.replace(cfg, recipe=recipe.with_overrides(epochs=2)), resume=True)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert (resolved["precision"], resolved["channels_last"]) == ("fp32", False)


@pytest.mark.parametrize(("bf16_img_s", "code"), [(100.0, 0), (104.0, 0), (110.0, 1)])
def test_bench_train_check_fails_when_auto_picked_the_slower(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                             capsys: pytest.CaptureFixture[str], bf16_img_s: float,
                                                             code: int) -> None:  # fmt: skip
    # auto picks fp32 here (no native bf16); the workers are faked: fp32 trains at 100 img/s.
    import alexnet.bench.train as bench_train
    import alexnet.cli.bench_train_cmd as cmd
    from alexnet.cli import main

    monkeypatch.setenv("ALEXNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P, "cpu_flags", lambda: AVX512)
    monkeypatch.setattr(P, "measure", lambda model, settings: measured(fp32_cl=0.1, fp32_nchw=0.2))
    monkeypatch.setattr(cmd, "measure", lambda *a, **k: {"configs": []})
    monkeypatch.setattr(bench_train, "in_fresh_process",
                        lambda spec: {"img_s": 100.0 if spec["config"]["precision"] == "fp32" else bf16_img_s})
    assert main(["bench", "train", "--device", "cpu", "--check", "--json"]) == code
    out, err = capsys.readouterr()
    rows = json.loads(out)["precision_check"]
    assert [(r["model"], r["auto"]) for r in rows] == [("alexnet", "fp32"), ("alexnet-small", "fp32")]
    assert rows[0]["bf16_vs_fp32"] == pytest.approx(bf16_img_s / 100)
    assert ("picked the slower precision" in err) == bool(code)
