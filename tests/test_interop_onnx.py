"""ONNX export, checked against PyTorch with onnxruntime on 8 real images, and predict via onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnx

from alexnet.data.convention import eval_transform
from alexnet.data.images import load_image
from alexnet.evaluation import load_model
from alexnet.inference import open_predictor
from alexnet.interop.onnx_model import METADATA_KEY, OnnxModel, export_onnx
from tests.helpers.cli import assert_one_line_error
from tests.helpers.interop import make_run, real_images, run_main


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return real_images(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize(
    ("name", "mean_image"), [("alexnet-small", False), ("alexnet", True), ("alexnet-owt", False)]
)
def test_export_matches_pytorch_on_real_images(name: str, mean_image: bool, images: list[str], tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", name, num_classes=10, mean_image=mean_image)
    out = tmp_path / "model.onnx"
    result = export_onnx(run, out, check_files=images)
    assert result.images == 8 and result.max_abs_diff <= 1e-4 and out.is_file()

    # Independently of the export's own check: our PyTorch model vs onnxruntime, 8 real images.
    torch_model = load_model(run, torch.device("cpu"))
    ort_model = OnnxModel(out)
    assert ort_model.convention.same_as(torch_model.convention)  # the record survives the export
    batch = torch.stack([load_image(f, ort_model.convention) for f in images])
    with torch.inference_mode():
        expected = torch_model.model(eval_transform(torch_model.convention).normalize(batch)).numpy()
    got = ort_model.logits(batch)
    assert got.shape == (8, 10)
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(ort_model.logits(batch[:3]) - expected[:3]).max() <= 1e-4  # dynamic batch

    proto = onnx.load(str(out), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    if name == "alexnet-owt":
        assert "LRN" not in ops and set(groups) == {1}
    else:  # the paper's LRN as ONNX's operator; two towers as grouped convolutions
        assert "LRN" in ops and groups == [1, 2, 1, 2, 2]
        lrn = next(n for n in proto.graph.node if n.op_type == "LRN")
        attrs = {a.name: (a.i if a.type == onnx.AttributeProto.INT else a.f) for a in lrn.attribute}
        assert attrs["size"] == 5 and attrs["bias"] == pytest.approx(2.0) and attrs["alpha"] == pytest.approx(1e-4)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in proto.metadata_props}
    stored = json.loads(meta[METADATA_KEY])
    assert stored["crop"] == torch_model.crop and (stored["mean_image"] is not None) == mean_image


@pytest.mark.parametrize("order", ["norm-pool", "pool-norm"])
def test_per_tower_lrn_exports_as_split_lrn_concat(order: str, images: list[str], tmp_path: Path) -> None:
    options = {"lrn_scope": "tower", "lrn_order": order}
    run = make_run(tmp_path / "run", "alexnet-small", num_classes=10, options=options)
    result = export_onnx(run, tmp_path / "tower.onnx", check_files=images)
    assert result.max_abs_diff <= 1e-4 * max(1.0, result.max_abs_logit)
    torch_model = load_model(run, torch.device("cpu"))
    assert torch_model.model.lrn_scope == "tower" and torch_model.model.features.norm1.groups == 2
    ort_model = OnnxModel(tmp_path / "tower.onnx")
    batch = torch.stack([load_image(f, ort_model.convention) for f in images])
    with torch.inference_mode():
        expected = torch_model.model(eval_transform(torch_model.convention).normalize(batch)).numpy()
    assert np.abs(ort_model.logits(batch) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    # ONNX's LRN has no groups: one LRN per tower, the halves joined again before pool (or conv2).
    nodes = onnx.load(str(tmp_path / "tower.onnx")).graph.node
    assert sum(n.op_type == "LRN" for n in nodes) == 4 and sum(n.op_type == "Concat" for n in nodes) >= 2


def test_predict_onnx_cli_agrees_with_pytorch(images: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", "alexnet-small", mean_image=True)
    out = tmp_path / "small.onnx"
    code, stdout, err = run_main(capsys, "export", str(run), "--format", "onnx", "--out", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["max_abs_diff"] <= 1e-4
    code, stdout, err = run_main(capsys, "predict", str(out), *images[:2], "--json", "--topk", "3")
    assert code == 0, err
    via_onnx = json.loads(stdout)
    via_torch = open_predictor(run, precision="fp32").predict(images[:2], 3)
    for a, b in zip(via_onnx, via_torch):
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx([p["probability"] for p in b["predictions"]],
                                                                            abs=1e-5)  # fmt: skip
        assert a["predictions"][0]["class"] in ("cat", "dog", "ship", "tree")


def test_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.onnx"))
    assert_one_line_error((code, err), "not found")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    img = real_images(tmp_path / "img", 1)[0]
    code, _, err = run_main(capsys, "predict", str(bad), img)
    assert_one_line_error((code, err), "not a loadable onnx model")
    assert not (tmp_path / "m.onnx").exists()
