"""`alexnet experiment`: plans (arms x seeds, each arm changes exactly its options), the analysis
on hand-made metrics files, resume of a killed experiment, and tiny real end-to-end runs."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import pytest

from alexnet import models
from alexnet.cli import main
from alexnet.data import open_dataset
from alexnet.errors import UserError
from alexnet.experiments import (
    EXPERIMENTS,
    analyse,
    compare,
    crossing,
    make_plan,
    read_metrics,
    require_colour,
    run_plan,
    run_status,
    runner,
    summarize,
    to_markdown,
    verdict,
    write_outputs,
)
from alexnet.experiments.runner import find_copy_source
from alexnet.runfolder import run_folder_lock
from alexnet.training.trainer import TrainConfig, train
from tests.helpers.cli import assert_one_line_error, run_cli

# What each experiment is about: the only settings in which its arms may differ.
INTENDED = {
    "relu-vs-tanh": {"model.activation"},
    "lrn": {"model.lrn"},
    "overlapping-pooling": {"model.pooling"},
    "dropout": {"recipe.dropout"},
    "two-towers": {"model.towers"},
    "pca-colour": {"recipe.pca_lighting"},
    "ten-crop": set(),  # one net per seed, seen two ways
    "depth": {"model.remove"},
    "paper-recipe": {"recipe.init"},
}
TINY = "synthetic:classes=4,size=28,train=128,val=32,channels=1"  # one step per epoch


def _flat(cfg: TrainConfig) -> dict[str, object]:
    d = cfg.to_dict()
    flat = {f"recipe.{k}": v for k, v in d.pop("recipe").items()}
    flat |= {f"model.{k}": v for k, v in d.pop("model_options").items()}
    return flat | d


def _diff(a: dict[str, object], b: dict[str, object]) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_every_experiment_is_planned() -> None:
    assert set(EXPERIMENTS) == set(INTENDED)


@pytest.mark.parametrize("name", list(INTENDED))
def test_plan_arms_times_seeds_and_each_arm_changes_only_its_options(name: str, tmp_path) -> None:
    plan = make_plan(name, seeds=3, budget="quick", out=tmp_path)
    exp = plan.experiment
    trained_arms = ["net"] if exp.kind == "views" else [a.name for a in exp.arms]
    assert [(r.arm, r.seed) for r in plan.runs] == [(a, s) for a in trained_arms for s in range(3)]
    assert len({r.folder for r in plan.runs}) == len(plan.runs)  # one run folder per arm and seed
    by = {(r.arm, r.seed): _flat(r.config) for r in plan.runs}
    base = trained_arms[0]
    for arm in trained_arms:
        for seed in range(3):
            changed = _diff(by[(base, seed)], by[(arm, seed)]) - {"out"}
            assert changed == (INTENDED[name] if arm != base else set()), (arm, changed)
            if arm != base:  # the resolved value is the arm's own
                for key, value in exp.arm(arm).changes().items():
                    assert by[(arm, seed)][key] == value
        # seeds differ in the seed (and folder) alone
        assert _diff(by[(arm, 0)], by[(arm, 2)]) == {"seed", "out"}
    quick, full = plan.runs[0].config, make_plan(name, seeds=1, budget="full", out=tmp_path).runs[0].config
    subset = "train5000" if exp.prepared_size else "@train="  # prepared data names its subset in the folder
    assert subset in quick.data and quick.recipe.epochs <= full.recipe.epochs
    assert _diff(_flat(quick), _flat(full)) <= {"data", "recipe.epochs"}


@pytest.mark.parametrize("name", list(INTENDED))
def test_every_arm_builds_its_model(name: str, tmp_path) -> None:
    plan = make_plan(name, seeds=1, out=tmp_path)
    for run in plan.runs:
        recipe = run.config.recipe
        size = 227 if plan.experiment.prepared_size else 28  # the paper's crop of 256 px images
        init = "paper" if recipe.init == "auto" else recipe.init  # auto starts from section 5's (trainer checks it)
        net = models.create(recipe.model, 10, in_channels=1, image_size=size, init=init, dropout=recipe.dropout,
                            **run.config.model_options)  # fmt: skip
        assert models.count_parameters(net) > 0


def test_plan_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(UserError, match="unknown experiment"):
        make_plan("lrm", out=tmp_path)
    with pytest.raises(UserError, match="budget"):
        make_plan("lrn", budget="slow", out=tmp_path)


def test_crossing_interpolates_between_epochs() -> None:
    records = [
        {"epoch": 1, "step": 10, "e": 0.5},
        {"epoch": 2, "step": 20, "e": 0.3},
        {"epoch": 3, "step": 30, "e": 0.1},
    ]
    assert crossing(records, "e", 0.2) == pytest.approx(2.5)
    assert crossing(records, "e", 0.2, x="step") == pytest.approx(25.0)
    assert crossing(records, "e", 0.3) == pytest.approx(2.0)
    assert crossing(records, "e", 0.6) == 1.0  # already below at the first record
    assert crossing(records, "e", 0.05) is None


def test_summary_and_noise_verdict() -> None:
    s = summarize([0.10, 0.12, 0.14, None])
    assert s["mean"] == pytest.approx(0.12) and s["std"] == pytest.approx(0.02) and (s["n"], s["missing"]) == (3, 1)
    far = compare([0.10, 0.11, 0.12], [0.20, 0.21, 0.22])
    assert far["diff"] == pytest.approx(0.10)
    assert far["noise"] == pytest.approx(math.sqrt(2 * 0.01**2 / 3))
    assert far["verdict"] == "larger than seed noise"
    assert compare([0.10, 0.14, 0.12], [0.11, 0.15, 0.10])["verdict"] == "within seed noise"
    # paired: per-seed differences 0.01, 0.011, 0.009 are steady although the seeds spread widely
    assert compare([0.1, 0.3, 0.5], [0.11, 0.311, 0.509], paired=True)["verdict"] == "larger than seed noise"
    assert compare([0.1], [0.2])["verdict"].startswith("cannot tell")
    assert verdict(None, None).startswith("no result")


def _write_metrics(folder, errors: list[float], seconds_per_epoch: float, losses: list[float] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, err in enumerate(errors):
        loss = losses[i] if losses else err
        rows.append({"epoch": i + 1, "step": 10 * (i + 1), "train_loss": loss, "train_top1_err": err,
                     "val_loss": loss + 0.1, "val_top1_err": err + 0.02, "train_seconds_total": seconds_per_epoch * (i + 1)})  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_analysis_of_hand_made_metrics_speed(tmp_path) -> None:
    plan = make_plan("relu-vs-tanh", seeds=3, out=tmp_path, threshold=0.2)
    # relu crosses 0.2 at epochs 1.5, 2.0, 2.5; tanh at 6.5 (x3) or never
    relu = [[0.3, 0.1, 0.1], [0.4, 0.2, 0.1], [0.4, 0.3, 0.1]]
    tanh = [[0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.15, 0.1]] * 2 + [[0.5] * 8]
    for run in plan.runs:
        curve = (relu if run.arm == "relu" else tanh)[run.seed]
        _write_metrics(run.folder, curve, seconds_per_epoch=10.0)
    result = analyse(plan)
    r, t = result["arms"]["relu"], result["arms"]["tanh"]
    assert r["epochs_to_threshold"]["mean"] == pytest.approx(2.0) and r["epochs_to_threshold"]["std"] == pytest.approx(
        0.5
    )
    assert r["seconds_to_threshold"]["mean"] == pytest.approx(20.0)
    assert t["epochs_to_threshold"]["values"] == [pytest.approx(6.5), pytest.approx(6.5), None]
    assert t["epochs_to_threshold"]["missing"] == 1
    assert result["ratio"]["tanh"] == pytest.approx(3.25)
    assert r["val_top1_err"]["mean"] == pytest.approx(0.12)
    (cmp,) = [c for c in result["comparisons"] if c["metric"] == "epochs_to_threshold"]
    assert cmp["arm"] == "tanh" and cmp["diff"] == pytest.approx(4.5) and cmp["verdict"] == "larger than seed noise"
    written = write_outputs(result, plan.out)
    assert json.loads((plan.out / "results.json").read_text())["ratio"]["tanh"] == pytest.approx(3.25)
    md = (plan.out / "results.md").read_text()
    assert "| tanh | 6.5 ± 0 (n=2), 1 not reached |" in md and "3.25x in epochs" in md
    if "plot" in written:  # matplotlib installed: a real PNG
        assert (plan.out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analysis_of_hand_made_metrics_dropout_gap_and_steps(tmp_path) -> None:
    plan = make_plan("dropout", seeds=2, out=tmp_path, threshold=0.3)
    for run in plan.runs:
        if run.arm == "no-dropout":  # fits the training set: low train error, same val error
            _write_metrics(run.folder, [0.2, 0.05, 0.01], 1.0, losses=[0.5, 0.2, 0.05])
        else:
            _write_metrics(run.folder, [0.3, 0.2, 0.1], 1.0, losses=[0.8, 0.5, 0.2])
    result = analyse(plan)
    a = result["arms"]
    assert a["no-dropout"]["steps_to_loss"]["mean"] == pytest.approx(10 + 10 * (0.5 - 0.3) / 0.3)
    assert a["dropout-0.5"]["steps_to_loss"]["mean"] == pytest.approx(20 + 10 * (0.5 - 0.3) / 0.3)
    assert a["no-dropout"]["gap_top1_err"]["mean"] == pytest.approx(0.02)
    assert "| no-dropout |" in to_markdown(result)


def test_analysis_views_is_paired(tmp_path) -> None:
    plan = make_plan("ten-crop", seeds=3, out=tmp_path)
    for run, (centre, ten) in zip(plan.runs, [(0.10, 0.09), (0.20, 0.19), (0.15, 0.141)]):
        run.folder.mkdir(parents=True)
        (run.folder / "eval-centre.json").write_text(json.dumps({"top1_err": centre}))
        (run.folder / "eval-ten-crop.json").write_text(json.dumps({"top1_err": ten}))
        _write_metrics(run.folder, [0.3], 1.0)
    result = analyse(plan)
    (cmp,) = result["comparisons"]
    assert cmp["diff"] == pytest.approx(-0.029 / 3) and cmp["verdict"] == "larger than seed noise"


def test_killed_experiment_skips_finished_runs_and_resumes_the_unfinished_one(tmp_path) -> None:
    plan = make_plan("relu-vs-tanh", data=TINY, seeds=1, out=tmp_path, progress=False)
    done, killed = plan.runs
    train(done.config)  # finished before the "kill"
    short = dataclasses.replace(killed.config, recipe=killed.config.recipe.with_overrides(epochs=3))
    train(short)  # stopped after 3 of 8 epochs: a checkpoint and 3 metrics rows
    before_done = (done.folder / "metrics.jsonl").read_text()
    before_killed = read_metrics(killed.folder)
    assert [run_status(r) for r in plan.runs] == ["done", "partial"]
    events = []
    run_plan(plan, on_event=events.append)
    assert [(e.state, e.arm) for e in events] == [("skip", "relu"), ("resume", "tanh"), ("done", "tanh")]
    assert (done.folder / "metrics.jsonl").read_text() == before_done  # not retrained
    after = read_metrics(killed.folder)
    assert len(after) == 8 and after[:3] == before_killed
    assert events[-1].eta_seconds == 0.0
    assert [run_status(r) for r in plan.runs] == ["done", "done"]
    # a run folder from other settings is never reused
    other = make_plan("relu-vs-tanh", data=TINY.replace("val=32", "val=16"), seeds=1, out=tmp_path)
    with pytest.raises(UserError, match="other settings"):
        run_plan(other)


def test_the_shared_baseline_arm_is_trained_once_and_copied(tmp_path, capsys) -> None:
    """lrn's `lrn=True` arm, ten-crop's net and depth's `remove=none` arm are one network: the
    second and third experiment copy the first one's finished runs; other settings never match."""
    lrn = make_plan("lrn", data=TINY, seeds=1, out=tmp_path, progress=False, precision="fp32")
    baseline = lrn.runs[0]
    train(baseline.config)
    assert models.canonical("alexnet-small", {"lrn": True}) == models.canonical("alexnet-small-depth", {})
    assert models.canonical("alexnet-small-depth", {"remove": "conv3"})[0] == "alexnet-small-depth"
    views = make_plan("ten-crop", data=TINY, seeds=1, out=tmp_path, progress=False, precision="fp32")
    depth = make_plan("depth", data=TINY, seeds=1, out=tmp_path, progress=False, precision="fp32")
    assert find_copy_source(views.runs[0], tmp_path) == baseline.folder
    assert find_copy_source(depth.runs[0], tmp_path) == baseline.folder
    assert [find_copy_source(r, tmp_path) for r in depth.runs[1:]] == [None] * 3  # other networks
    for other in (
        dataclasses.replace(baseline.config, seed=1),
        dataclasses.replace(baseline.config, precision="bf16"),
        dataclasses.replace(baseline.config, recipe=baseline.config.recipe.with_overrides(lr=0.01)),
        dataclasses.replace(baseline.config, recipe=baseline.config.recipe.with_overrides(epochs=5)),
    ):
        assert find_copy_source(dataclasses.replace(views.runs[0], config=other), tmp_path) is None
    capsys.readouterr()  # the training log so far
    assert main(["experiment", "depth", "--data", TINY, "--seeds", "1", "--out", str(tmp_path), "--plan",
                 "--precision", "fp32"]) == 0  # fmt: skip
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].endswith(f"[copy of {baseline.folder}]") and all(x.endswith("[to train]") for x in listed[2:])
    events = []
    run_plan(views, on_event=events.append)
    assert (events[0].state, events[0].source) == ("copy", baseline.folder)
    copied = views.runs[0].folder
    assert (copied / "metrics.jsonl").read_bytes() == (baseline.folder / "metrics.jsonl").read_bytes()
    assert json.loads((copied / "copied-from.json").read_text())["source"] == str(baseline.folder.resolve())
    assert run_status(views.runs[0]) == "done"  # the copy's config (lrn=True) is the same run as {}
    assert {e.state for e in events[1:]} == {"eval"} and analyse(views)["arms"]["centre"]["val_top1_err"]["n"] == 1


def test_a_run_another_process_holds_is_passed_over_and_waited_for(tmp_path, monkeypatch) -> None:
    """Two processes on one plan share out its runs: the plan trains the runs it can, and waits
    for the one whose folder lock is held elsewhere (here: a thread, as a second process would)."""
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)
    plan = make_plan("relu-vs-tanh", data=TINY, seeds=2, out=tmp_path, progress=False, precision="fp32")
    events, locked, release = [], threading.Event(), threading.Event()

    def hold() -> None:
        with run_folder_lock(plan.runs[0].folder):
            locked.set()
            release.wait(120)

    def on_event(e) -> None:
        events.append((e.state, e.index))
        if sum(state == "done" for state, _ in events) == len(plan.runs) - 1:
            release.set()  # the "other process" lets go only once the plan has done all else

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(60)
    run_plan(plan, on_event)  # training needs the main thread (signal handlers)
    holder.join(10)
    assert events[0] == ("busy", 0)
    assert [i for state, i in events if state == "done"] == [1, 2, 3, 0]  # run 0 last, once
    assert all(len(read_metrics(r.folder)) == 8 for r in plan.runs)


def test_the_eta_counts_the_epochs_every_process_finished(tmp_path) -> None:
    # Two processes on one plan: each one's pace is the epochs finished by both, and the work
    # left is what neither has done yet (not the other's runs counted again as its own).
    plan = make_plan("relu-vs-tanh", data=TINY, seeds=2, out=tmp_path, progress=False)
    runs, epochs = plan.runs, plan.budget.epochs
    assert (len(runs), epochs) == (4, 8)
    assert runner.eta_seconds(10.0, runs, epochs, 0) is None  # nothing finished yet
    for run, rows in zip(runs, (8, 3, 1, 0)):  # run 0 was done before; 3 + 1 epochs since, by two processes
        run.folder.mkdir(parents=True)
        (run.folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1}) + "\n" for e in range(rows)))
    assert runner.epochs_done(runs, epochs) == 12
    # 4 epochs in 40 s = 10 s per epoch, 32 - 12 = 20 epochs left
    assert runner.eta_seconds(40.0, runs, epochs, 8) == pytest.approx(200.0)


def test_a_copy_never_replaces_a_folder_taken_meanwhile(tmp_path) -> None:
    source = tmp_path / "a" / "x" / "seed-0"
    (source / "checkpoints").mkdir(parents=True)
    (source / "metrics.jsonl").write_text("{}\n")
    taken = tmp_path / "b" / "x" / "seed-0"
    taken.mkdir(parents=True)
    (taken / ".alexnet.lock").write_text("")  # another process started training here
    assert not runner.copy_run(source, taken)
    assert [p.name for p in taken.iterdir()] == [".alexnet.lock"]
    assert [p.name for p in taken.parent.iterdir()] == ["seed-0"]  # no staging folder left
    fresh = tmp_path / "b" / "x" / "seed-1"
    assert runner.copy_run(source, fresh) and (fresh / "metrics.jsonl").read_text() == "{}\n"


def test_tiny_real_experiment_end_to_end(tmp_path) -> None:
    proc = run_cli("experiment", "lrn", "--data", TINY, "--seeds", "2", "--out", str(tmp_path), "--no-progress",
                   "--json", "--precision", "fp32", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result["arms"]) == {"lrn", "no-lrn"}
    for arm in result["arms"].values():
        assert arm["val_top1_err"]["n"] == 2 and 0.0 <= arm["val_top1_err"]["mean"] <= 1.0
    assert result["comparisons"][0]["verdict"] in ("larger than seed noise", "within seed noise")
    assert "arm no-lrn seed 1" in proc.stderr and "ETA" in proc.stderr
    assert (tmp_path / "lrn" / "results.md").read_text().startswith("### lrn (section 3.3)")
    for r in result["runs"]:
        assert len(read_metrics(r)) == 4  # the quick budget's epochs


def test_pca_colour_on_grayscale_data_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    code = main(["experiment", "pca-colour", "--data", TINY, "--out", str(tmp_path)])
    assert_one_line_error((code, capsys.readouterr().err), "needs colour images")
    assert not (tmp_path / "pca-colour").exists()


@pytest.mark.parametrize("data", ["nosuch:x", "cifar10"])
def test_a_wrong_data_source_is_one_line_before_anything_is_written(tmp_path, capsys, data: str) -> None:
    code = main(["experiment", "lrn", "--data", data, "--out", str(tmp_path / "out")])
    assert_one_line_error((code, capsys.readouterr().err), "data source" if data == "nosuch:x" else "needs a folder")
    assert not (tmp_path / "out").exists()


def test_colour_experiments_take_cifar10_as_the_issue_names_it(tmp_path) -> None:
    from tests.helpers.layouts import make_cifar10

    tarball, _ = make_cifar10(tmp_path / "cifar-10-python.tar.gz", per_batch=4)
    plan = make_plan("pca-colour", data=f"cifar10:{tmp_path}", seeds=1, out=tmp_path / "runs")
    require_colour(plan)  # three channels: no error
    assert plan.runs[0].config.data == f"cifar10:{tmp_path}@train=10000,val=2000"
    assert make_plan("relu-vs-tanh", data=f"cifar10:{tarball}").threshold == 0.25  # Figure 1's own threshold
    # Fashion-MNIST: the line each budget's nets pass (20% quick, 12% full), unless --threshold
    assert [make_plan("relu-vs-tanh", budget=b).threshold for b in ("quick", "full")] == [0.20, 0.12]
    assert make_plan("relu-vs-tanh", budget="full", threshold=0.3).threshold == 0.3
    assert make_plan("dropout", budget="full").threshold == make_plan("dropout").threshold == 0.5


def test_subset_source_is_fixed_and_capped() -> None:
    a = open_dataset("synthetic:classes=4,size=16,train=64,val=32@train=16,val=8")
    b = open_dataset("synthetic:classes=4,size=16,train=64,val=32@train=16,val=8")
    assert (a.num_samples("train"), a.num_samples("val")) == (16, 8)
    assert bool((a.splits["train"][0] == b.splits["train"][0]).all())
    assert open_dataset("synthetic:classes=4,size=16,train=64,val=32@train=1000").num_samples("train") == 64
    with pytest.raises(UserError, match="subset"):
        open_dataset("synthetic@train=x")
