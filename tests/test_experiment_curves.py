"""`alexnet experiment data-scaling` / `transfer`: nested class-balanced subsets, the crossover and
the power-law fit on curves with a known answer, the printed commands reproduce the planned runs,
resume after a kill, and the CLI's one-line refusals. Tiny data only (synthetic, a few dozen images)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.cli import build_parser
from alexnet.cli.train_cmd import config_from_args
from alexnet.data import open_dataset
from alexnet.data.subset import parse_subset
from alexnet.errors import UserError
from alexnet.experiments import runner
from alexnet.experiments.curve_report import analyse_curves, write_curve_outputs
from alexnet.experiments.curve_runner import PointEvent, point_status, run_curve_plan
from alexnet.experiments.curves import confidence_interval, crossover, crossover_over_seeds, power_law
from alexnet.experiments.runner import read_metrics
from alexnet.experiments.scaling import make_curve_plan, network_recipe, parse_sizes, parse_systems
from alexnet.runfolder import run_folder_lock
from tests.helpers.cli import REPO, assert_one_line_error, cli_main

TINY = "synthetic:classes=10,size=28,train=400,val=40,channels=1"


def _indices(source: str) -> set[bytes]:
    images, _ = open_dataset(source).splits["train"]
    return {bytes(img.numpy().tobytes()) for img in images}


def test_per_class_subsets_are_nested_balanced_and_differ_by_draw() -> None:
    small, large = (open_dataset(f"{TINY}@per-class={n},draw=1") for n in (3, 8))
    for ds, n in ((small, 3), (large, 8)):
        assert torch.bincount(ds.splits["train"][1], minlength=10).tolist() == [n] * 10
    assert _indices(f"{TINY}@per-class=3,draw=1") <= _indices(f"{TINY}@per-class=8,draw=1")
    assert _indices(f"{TINY}@per-class=3,draw=1") != _indices(f"{TINY}@per-class=3,draw=2")
    repeated = open_dataset(f"{TINY}@per-class=3,draw=1,repeat=4").splits["train"]
    assert torch.equal(repeated[0], small.splits["train"][0].repeat(4, 1, 1, 1))
    # the same test images whatever the size and draw
    a, b = open_dataset(f"{TINY}@per-class=3,draw=1,val=20"), open_dataset(f"{TINY}@per-class=8,draw=2,val=20")
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])


def test_class_range_relabels_and_keeps_only_those_classes() -> None:
    base = open_dataset(TINY)
    ds = open_dataset(f"{TINY}@classes=5-9,per-class=4")
    assert ds.info.classes == base.info.classes[5:] and ds.info.num_classes == 5
    assert torch.bincount(ds.splits["train"][1]).tolist() == [4] * 5
    assert set(ds.splits["val"][1].tolist()) <= set(range(5))
    kept = base.splits["val"][1] >= 5
    assert torch.equal(ds.splits["val"][0], base.splits["val"][0][kept])


@pytest.mark.parametrize("spec", ["per-class=0", "classes=9-5", "train=10,per-class=3", "draw=2", "classes=a-b"])
def test_bad_subset_specs_are_refused(spec: str) -> None:
    with pytest.raises(UserError):
        parse_subset(spec)


def test_crossover_on_curves_with_a_known_answer() -> None:
    sizes = [10, 100, 1000]
    # the difference goes +0.1 -> -0.1 between 100 and 1000: halfway in log N is 10 ** 2.5
    assert crossover(sizes, [0.5, 0.3, 0.1], [0.3, 0.2, 0.2]) == {"n": pytest.approx(10**2.5), "state": "crossed"}
    assert crossover(sizes, [0.2, 0.1, 0.05], [0.3, 0.2, 0.1])["state"] == "ahead"
    assert crossover(sizes, [0.5, 0.4, 0.3], [0.3, 0.2, 0.1]) == {"n": None, "state": "behind"}
    seeds = crossover_over_seeds(sizes, [[0.5, 0.3, 0.1], [0.5, 0.2, 0.1], [0.5, 0.4, 0.3]], [[0.3, 0.2, 0.2]] * 3)
    crossed = [10**2.5, 100.0]  # the second seed is level at 100
    assert seeds["mean"] == pytest.approx(np.mean(crossed)) and seeds["std"] == pytest.approx(np.std(crossed, ddof=1))
    assert (seeds["crossed"], seeds["ahead"], seeds["behind"], seeds["ahead_at_largest"]) == (2, 0, 1, 2)
    # three seeds crossing at 500, 600, 700: mean 600, std 100, t(0.975, 2) = 4.303 -> +- 248.4
    three = crossover_over_seeds(sizes, [[0.5, 0.3, 0.1]] * 3, [[0.3, 0.2, 0.2]] * 3)
    assert three["ci95"] == pytest.approx((three["mean"], three["mean"]))  # identical seeds: no width
    lo, hi = confidence_interval([500.0, 600.0, 700.0])
    assert (lo, hi) == pytest.approx((600 - 248.42, 600 + 248.42), abs=0.01)
    assert confidence_interval([500.0]) is None


def test_power_law_fit_recovers_a_known_curve() -> None:
    n = [10, 30, 100, 300, 1000, 3000] * 3
    rng = np.random.default_rng(0)
    err = [0.9 * x**-0.31 + 0.05 + rng.normal(0, 1e-4) for x in n]
    fit = power_law(n, err)
    assert fit is not None
    assert fit["b"] == pytest.approx(-0.31, abs=0.01) and fit["c"] == pytest.approx(0.05, abs=0.005)
    assert fit["rms_residual"] < 5e-4 and len(fit["residuals"]) == len(n)
    assert power_law([10, 100, 1000], [0.5, 0.3, 0.2]) is None  # three parameters need four sizes


def test_network_recipe_floors_the_steps_and_fits_the_batch_to_the_data() -> None:
    (small, small_k), (large, large_k) = (network_recipe(n, epochs=4, min_steps=1000) for n in (100, 60_000))
    assert (small.batch_size, small_k, large.batch_size, large_k) == (32, 20, 128, 1)
    for r, images in ((small, 100 * small_k), (large, 60_000)):
        assert r.epochs * (images // r.batch_size) >= 1000 and r.epochs >= 4
    assert large.epochs == 4 and small.lr <= large.lr
    plan = make_curve_plan("data-scaling", TINY, sizes=(4,), systems=("hog", "alexnet-small"), seeds=1)
    hog, net = plan.points
    assert hog.baseline.data + ",repeat=50" == net.train.data  # the same images; the network's epoch repeats them


def test_an_epoch_holds_a_validation_pass_and_epochs_count_passes_over_the_data() -> None:
    # 100 training images validated on 10,000 per epoch: the epoch is 100 passes, not 20, so the
    # validation reads no more images than the training; 5 passes then need only one such epoch
    recipe, repeat = network_recipe(100, epochs=5, min_steps=100, val_images=10_000)
    assert repeat == 100 and recipe.epochs == 1 and recipe.epochs * 100 * repeat // recipe.batch_size >= 100
    assert network_recipe(100, epochs=5, min_steps=100)[1] == 20  # without a validation set: 2,000 images
    recipe, repeat = network_recipe(100, epochs=5, min_steps=2000, val_images=10_000)
    assert recipe.epochs == math.ceil(2000 / (100 * repeat // recipe.batch_size))  # the step floor still holds
    recipe, repeat = network_recipe(60_000, epochs=5, min_steps=100, val_images=10_000)
    assert (repeat, recipe.epochs) == (1, 5)  # a large set: ``epochs`` passes as given
    # the plans pass the validation images through (the full budget validates on the whole test
    # split: 6,000 images, 3,000 of them in the transfer target's 5 classes)
    data = TINY.replace("val=40", "val=6000")
    plan = make_curve_plan("data-scaling", data, sizes=(4,), systems=("alexnet-small",), seeds=1, budget_name="full")
    assert plan.points[0].train.data.endswith(f"repeat={6000 // 40}")  # 4 images x 10 classes per pass
    plan = make_curve_plan("transfer", data, sizes=(4,), systems=("scratch",), seeds=1, budget_name="full")
    assert plan.points[0].train.data.endswith(f"repeat={3000 // 20}")


def test_printed_commands_are_the_planned_runs(tmp_path) -> None:
    plan = make_curve_plan("transfer", TINY, sizes=(4,), seeds=1, out=tmp_path)
    for point in (*plan.sources, *plan.points):
        argv = shlex.split(point.command())[1:]
        args = build_parser().parse_args(argv)
        if point.probe is not None:
            assert (args.run, args.data, args.layers, args.train_images, args.max_iter) == (
                point.probe.run,
                point.probe.data,
                "fc7",
                0,
                300,
            )
            continue
        if point.train is not None and point.train.init_from:  # resolving --init-from needs the trained source
            assert (args.init_from, args.freeze or "none") == (point.train.init_from, point.train.freeze)
            args.init_from = args.freeze = None
            point = dataclasses.replace(point, train=dataclasses.replace(point.train, init_from=None, freeze="none"))
        if point.train is not None:
            cfg, _ = config_from_args(args)
            mine, theirs = point.train.to_dict(), cfg.to_dict()
            for runtime in ("progress", "workers", "device", "precision"):
                mine.pop(runtime), theirs.pop(runtime)
            assert theirs == mine
        else:
            assert (args.data, args.features, args.seed, args.out) == (
                point.baseline.data,
                point.baseline.features,
                point.baseline.seed,
                str(point.folder),
            )


def test_data_scaling_runs_resumes_after_a_kill_and_reports(tmp_path) -> None:
    kwargs = {
        "sizes": (4, 8, 12, 20),
        "systems": ("hog", "alexnet-small"),
        "seeds": 2,
        "out": tmp_path,
        "progress": False,
    }
    plan = make_curve_plan("data-scaling", TINY, **kwargs)
    plan = _tiny(plan)
    killed = next(p for p in plan.points if p.system == "alexnet-small")

    class Kill(Exception):
        pass

    def kill_after_first_network(e: PointEvent) -> None:
        if e.state == "done" and e.point == killed:
            raise Kill

    with pytest.raises(Kill):
        run_curve_plan(plan, kill_after_first_network)
    before = read_metrics(killed.folder)
    events: list[PointEvent] = []
    run_curve_plan(plan, events.append)
    assert [e.state for e in events if e.point.folder == killed.folder] == ["skip"]
    assert read_metrics(killed.folder) == before
    assert all(point_status(p) == "done" for p in plan.points)
    result = analyse_curves(plan)
    written = write_curve_outputs(result, plan.out)
    saved = json.loads(Path(written["json"]).read_text())
    assert {r["system"] for r in saved["rows"]} == {"hog", "alexnet-small"}
    assert all(r["test_err"]["n"] == 2 for r in saved["rows"])
    assert saved["crossovers"][0]["challenger"] == "alexnet-small"
    assert all(f is None or math.isfinite(f["b"]) for f in saved["fits"].values())
    md = Path(written["markdown"]).read_text()
    assert "alexnet train --data" in md and "alexnet baseline --data" in md
    assert "sizes 4, 8, 12, 20 per class" in md  # the sizes run (--sizes), not the budget's default


def _tiny(plan):
    """The plan with a floor of 4 steps instead of the budget's (the suite stays fast)."""
    points = tuple(
        dataclasses.replace(p, train=dataclasses.replace(p.train, data=re.sub(r",repeat=\d+", "", p.train.data),
                            recipe=p.train.recipe.with_overrides(epochs=1, batch_size=8)))
        if p.train is not None else p for p in plan.points
    )  # fmt: skip
    return dataclasses.replace(plan, points=points)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "10,0"], "bad --sizes item '0'"),
        (["--sizes", "10,10"], "lists a size twice"),
        (["--systems", "hog,svm"], "unknown --systems svm"),
        (["--arms", "a"], "not options of data-scaling"),
    ],
)
def test_cli_refuses_bad_sizes_and_systems_in_one_line(argv, message, tmp_path, capsys) -> None:
    code, _, err = cli_main(
        capsys, "experiment", "data-scaling", "--data", TINY, "--plan", "--out", str(tmp_path), *argv
    )
    assert_one_line_error((code, err), message)


def test_parsers_accept_all_and_sort() -> None:
    assert parse_sizes("all,10,300") == (10, 300, None)
    assert parse_systems("scratch,hog", "transfer") == ("scratch", "hog")
    with pytest.raises(UserError, match="choose from"):
        parse_systems("alexnet-small", "transfer")


def test_transfer_trains_the_source_first_and_reuses_it(tmp_path) -> None:
    plan = make_curve_plan("transfer", TINY, sizes=(4, 8), seeds=1, out=tmp_path, progress=False)
    plan = _tiny(plan)
    plan = dataclasses.replace(plan, sources=_tiny(dataclasses.replace(plan, points=plan.sources)).points)
    run_curve_plan(plan)
    result = analyse_curves(plan)
    assert {r["system"] for r in result["rows"]} == {"scratch", "frozen-fc7", "fine-tune", "hog"}
    assert all(r["test_err"]["mean"] is not None for r in result["rows"])
    frozen = next(p for p in plan.points if p.system == "frozen-fc7")
    assert frozen.probe.run == str(plan.sources[0].folder)
    probed = json.loads((frozen.folder / "probe.json").read_text())
    assert probed["train_images"] == 5 * 4 and probed["rows"][0]["name"] == "fc7"
    tuned = next(p for p in plan.points if p.system == "fine-tune")
    assert json.loads((tuned.folder / "config.json").read_text())["config"]["init_from"] == str(plan.sources[0].folder)
    assert {(c["challenger"], c["incumbent"]) for c in result["crossovers"]} >= {("scratch", "frozen-fc7")}


def test_points_another_process_holds_are_passed_over_and_waited_for(tmp_path, monkeypatch) -> None:
    """Two processes on one curve plan share out its points: while another one (here a thread, as
    a second process would) holds the transfer source, this one passes over it and the points
    that start from it, runs the rest, then waits, and runs the source and its dependents after."""
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)
    plan = _tiny(make_curve_plan("transfer", TINY, sizes=(4,), seeds=1, out=tmp_path, progress=False))
    plan = dataclasses.replace(plan, sources=_tiny(dataclasses.replace(plan, points=plan.sources)).points)
    locked, release, events = threading.Event(), threading.Event(), []

    def hold() -> None:
        with run_folder_lock(plan.sources[0].folder):
            locked.set()
            release.wait(120)

    def on_event(e: PointEvent) -> None:
        events.append((e.state, e.point.system))
        if all(point_status(p) == "done" for p in plan.points if p.needs is None):
            release.set()  # the "other process" lets go once everything else is done

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(60)
    run_curve_plan(plan, on_event)  # training needs the main thread (signal handlers)
    holder.join(10)
    assert [s for state, s in events if state == "busy"] == ["source", "frozen-fc7", "fine-tune"]
    assert [s for state, s in events if state == "done"] == ["scratch", "hog", "source", "frozen-fc7", "fine-tune"]
    assert all(point_status(p) == "done" for p in (*plan.sources, *plan.points))


def test_a_network_point_killed_mid_run_resumes_exactly(tmp_path) -> None:
    from alexnet.training.trainer import train

    plan = _tiny(make_curve_plan("data-scaling", TINY, sizes=(4,), systems=("alexnet-small",), seeds=1, out=tmp_path))
    point = plan.points[0]
    point = dataclasses.replace(
        point, train=dataclasses.replace(point.train, recipe=point.train.recipe.with_overrides(epochs=2))
    )
    plan = dataclasses.replace(plan, points=(point,))
    short = dataclasses.replace(point.train, recipe=point.train.recipe.with_overrides(epochs=1), progress=False)
    train(short)  # the "kill": one of two epochs done, its checkpoint on disk
    first = read_metrics(point.folder)
    events: list[PointEvent] = []
    run_curve_plan(plan, events.append)
    assert [e.state for e in events] == ["resume", "done"]
    after = read_metrics(point.folder)
    assert len(after) == 2 and after[:1] == first
    assert json.loads((point.folder / "experiment-cost.json").read_text())["resumed"] is True


def test_ctrl_c_during_a_point_is_one_line_and_leaves_it_to_resume(tmp_path) -> None:
    argv = [sys.executable, "-m", "alexnet", "experiment", "data-scaling", "--data", TINY, "--sizes", "4",
            "--systems", "hog,alexnet-small", "--seeds", "1", "--no-progress", "--precision", "fp32", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "data-scaling" / "alexnet-small" / "n-4" / "seed-0" / "metrics.jsonl"
    deadline = time.time() + 300
    while not metrics.is_file():  # the first epoch is done: the point is inside its training loop
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith("run the same command again to resume")
    assert re.search(r"1/2: hog n=4 seed 0: done in \d+m\d\ds", err), err  # each finished point says its time
    rows = len(read_metrics(metrics.parent))
    plan = make_curve_plan("data-scaling", TINY, sizes=(4,), systems=("hog", "alexnet-small"), seeds=1, out=tmp_path,
                           precision="fp32")
    assert point_status(plan.points[1]) == "partial" and rows < plan.points[1].train.recipe.epochs
