"""The checkpoint format's one owner: round trip, and a bounded fuzz of the loader (any damage
to the bytes or to the fields gives a one-line UserError, never anything else)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alexnet import models
from alexnet.checkpoint import (
    Checkpoint,
    DataSpec,
    Progress,
    read_checkpoint,
    save_checkpoint,
)
from alexnet.data.pipeline import InputNorm
from alexnet.errors import UserError
from alexnet.runfolder import prune_step_checkpoints, step_file_name
from tests.helpers.hostile import apply_edits

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tiny_checkpoint() -> Checkpoint:
    options = {"in_channels": 1, "image_size": 28, "widths": [4, 4, 4, 4, 4], "fc_width": 8}
    model = models.create("alexnet-small", 3, **options)
    data = DataSpec("synthetic", 1, 28, 28, True, InputNorm((10.0,), (20.0,), torch.rand(1, 28, 28)))
    progress = Progress(epoch=1, global_step=5, history=[{"epoch": 1, "val_top1_err": 0.5}])
    return Checkpoint(model.state_dict(), "alexnet-small", options, ("a", "b", "c"), data, progress,
                      optimizer={"state": {}, "param_groups": []}, scheduler={"last_epoch": 5},
                      rng=[{"torch": torch.get_rng_state()}], config={"data": "synthetic"})  # fmt: skip


@pytest.fixture(scope="module")
def valid_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(tiny_checkpoint().to_dict(), buffer)
    return buffer.getvalue()


def load_and_build(path: Path) -> None:
    """What eval and resume do with a file: read it, build its model, load the weights."""
    ckpt = read_checkpoint(path)
    ckpt.build_model()


def test_round_trip(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint()
    save_checkpoint(tmp_path / "c.pt", ckpt)
    back = read_checkpoint(tmp_path / "c.pt")
    assert back.resumable and back.classes == ckpt.classes and back.progress == ckpt.progress
    assert back.data.norm.mean == (10.0,) and torch.equal(back.data.norm.mean_image, ckpt.data.norm.mean_image)
    model = back.build_model()
    assert all(torch.equal(model.state_dict()[k], ckpt.weights[k]) for k in ckpt.weights)


def test_pruning_keeps_the_newest(tmp_path: Path) -> None:
    for step in (4, 8, 12, 16):
        (tmp_path / step_file_name(step)).write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"x")
    prune_step_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step-00000012.pt", "step-00000016.pt"]
    prune_step_checkpoints(tmp_path, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@FUZZ
@given(data=st.data())
def test_damaged_bytes_give_a_clear_error(valid_bytes: bytes, tmp_path: Path, data: st.DataObject) -> None:
    blob = bytearray(valid_bytes)
    cut = data.draw(st.integers(0, len(blob)), label="truncate at")
    blob = blob[:cut]
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        if blob:
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.pt"
    path.write_bytes(bytes(blob))
    try:
        load_and_build(path)
    except UserError as e:
        assert "\n" not in str(e) and str(path) in str(e)


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(-2, 300), max_size=5), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.tuples(st.integers(0, 3), st.integers(0, 40)).map(lambda s: torch.zeros(s)),
)  # fmt: skip
FIELDS = ["model", "model_name", "model_options", "num_classes", "classes", "data", "kind", "format_version", "progress",
          "rng", "optimizer", "data.channels", "data.image_size", "data.crop", "data.mean", "data.std", "data.mean_image",
          "data.convention", "model.features.conv1.weight", "model_options.widths", "model_options.towers", "model_options.activation",
          "progress.history", "progress.meter", "model_options.bogus"]  # fmt: skip


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
@example(edits=[("format_version", torch.zeros((2, 1)))])  # a tensor's repr spans lines: once found by the fuzzer
def test_wrong_fields_give_a_clear_error(tmp_path: Path, edits: list[tuple[str, object]]) -> None:
    d = apply_edits(tiny_checkpoint().to_dict(), edits)
    path = tmp_path / "fields.pt"
    torch.save(d, path)
    try:
        load_and_build(path)
    except UserError as e:
        assert "\n" not in str(e)
