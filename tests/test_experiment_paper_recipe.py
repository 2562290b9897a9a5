"""The paper-recipe experiment's plumbing: a 28 px source prepared at 256 px once, then ordinary runs.

The learning itself (the paper net on Fashion-MNIST at 227 px) takes CPU minutes per run and is
recorded in docs/RESULTS.md; the device check's dry run trains one tiny run of it end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnet.data import open_dataset
from alexnet.errors import UserError
from alexnet.experiments import make_plan, prepare_data
from alexnet.experiments.paper_size import is_prepared

TINY = "synthetic:classes=3,size=28,train=60,val=30,channels=1"


def test_the_plan_trains_on_the_budget_subset_prepared_at_256_px(tmp_path: Path) -> None:
    plan = make_plan("paper-recipe", data=TINY, seeds=2, out=tmp_path)
    folders = {r.config.data for r in plan.runs}
    assert len(folders) == 1 and plan.to_prepare == f"{TINY}@train=5000,val=1000"
    folder = Path(folders.pop())
    assert folder.is_relative_to(tmp_path / "paper-recipe") and not folder.exists()  # planning writes nothing
    assert {r.config.recipe.name for r in plan.runs} == {"paper"} and all(r.config.workers >= 1 for r in plan.runs)
    messages: list[str] = []
    prepare_data(plan, messages.append)
    assert is_prepared(str(folder)) and len(messages) == 1 and "256 px" in messages[0]
    prepared, source = open_dataset(str(folder)), open_dataset(TINY)
    assert prepared.info.image_size == 256 and prepared.eval_crop == 227 and prepared.info.num_classes == 3
    for split in ("train", "val"):
        assert prepared.num_samples(split) == source.num_samples(split)
        assert prepared.labels(split).bincount().tolist() == source.splits[split][1].bincount().tolist()
    prepare_data(plan, messages.append)  # done once: a second call does nothing
    assert len(messages) == 1
    # A folder already prepared is used as it is, whatever the budget.
    again = make_plan("paper-recipe", data=str(folder), seeds=1, budget="full", out=tmp_path / "other")
    assert again.to_prepare is None and again.runs[0].config.data == str(folder)


def test_arms_can_be_chosen_but_not_without_the_baseline(tmp_path: Path) -> None:
    plan = make_plan("paper-recipe", seeds=1, out=tmp_path, arms=("paper",))
    assert [r.arm for r in plan.runs] == ["paper"] and [a.name for a in plan.experiment.arms] == ["paper"]
    with pytest.raises(UserError, match="must include paper"):
        make_plan("paper-recipe", out=tmp_path, arms=("as-printed",))
    with pytest.raises(UserError, match="no arm"):
        make_plan("paper-recipe", out=tmp_path, arms=("paper", "adam"))


def test_colour_sources_are_refused_with_the_command_to_prepare_them(tmp_path: Path) -> None:
    plan = make_plan("paper-recipe", data="synthetic:classes=2,size=28,train=8,val=4,channels=3", seeds=1, out=tmp_path)
    with pytest.raises(UserError, match="alexnet prepare SOURCE OUT --size 256"):
        prepare_data(plan, print)


def test_a_run_whose_auto_init_settled_is_the_planned_run(tmp_path: Path) -> None:
    import json

    from alexnet.experiments import run_status

    run = make_plan("paper-recipe", seeds=1, out=tmp_path, arms=("paper",)).runs[0]
    assert run.config.recipe.init == "auto"
    run.folder.mkdir(parents=True)
    saved = json.loads(json.dumps(run.config.to_dict()))
    for settled in ("caffe", "paper"):  # what the trainer writes once auto has chosen
        saved["recipe"]["init"] = settled
        (run.folder / "config.json").write_text(json.dumps({"config": saved}))
        assert run_status(run) == "new"
    saved["recipe"]["init"] = "kaiming"  # a different run
    (run.folder / "config.json").write_text(json.dumps({"config": saved}))
    with pytest.raises(UserError, match="other settings"):
        run_status(run)
