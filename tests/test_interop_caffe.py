"""`alexnet import caffe` against an independent float64 numpy forward pass of Caffe's layer semantics.

The caffemodel, prototxt and mean files are written here from caffe.proto's field numbers with a
tiny protobuf wire encoder of the test's own (not the importer's schema code): BlobProto shape 7,
data 5, legacy num/channels/height/width 1-4; NetParameter layer 100 (V2), layers 2 (V1);
LayerParameter name 1, type 2, blobs 7; V1LayerParameter name 4, type 5 (enum), blobs 6.
The net is AlexNet's topology at 227 px with narrow widths (the converter reads widths from the
blobs), so the float64 reference stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("google.protobuf")

from alexnet import models
from alexnet.data.convention import eval_transform
from alexnet.data.images import load_image
from alexnet.evaluation import load_model
from alexnet.interop.caffe import import_caffe
from tests.helpers.caffe import CLASSES, FC, WIDTHS, caffe_layers, write_files
from tests.helpers.cli import assert_one_line_error
from tests.helpers.interop import real_images, run_main

# ------------------------------------------------------------ Caffe's layer semantics in float64 numpy


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """caffe ConvolutionLayer: out = sum over its group's input maps, (H + 2 pad - k) / stride + 1 (floor)."""
    _, c, h, _ = x.shape
    k = w.shape[-1]
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    side = (h + 2 * pad - k) // stride + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :side, :side]
    outs = []
    per_in, per_out = c // groups, w.shape[0] // groups
    for g in range(groups):
        part = cols[:, g * per_in : (g + 1) * per_in]  # n, cin, side, side, k, k
        outs.append(np.einsum("nchwij,ocij->nohw", part, w[g * per_out : (g + 1) * per_out], optimize=True))
    return np.concatenate(outs, axis=1) + b[None, :, None, None]


def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """caffe LRNLayer ACROSS_CHANNELS: scale = k + alpha / size * sum of squares over channels c - 2 .. c + 2."""
    sq = np.pad(x**2, ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
    window = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    return x * (k + alpha / size * window) ** -beta


def max_pool(x: np.ndarray, kernel: int = 3, stride: int = 2) -> np.ndarray:
    """caffe PoolingLayer MAX: output side ceil((H - k) / stride) + 1, windows clipped at the edge."""
    h = x.shape[2]
    side = int(np.ceil((h - kernel) / stride)) + 1
    out = np.full(x.shape[:2] + (side, side), -np.inf)
    for i in range(side):
        for j in range(side):
            win = x[:, :, i * stride : min(i * stride + kernel, h), j * stride : min(j * stride + kernel, h)]
            out[:, :, i, j] = win.max(axis=(2, 3))
    return out


def caffe_forward(bgr: np.ndarray, layers: list[dict]) -> np.ndarray:
    """The deploy net on a BGR, mean-subtracted float64 batch, layer by layer as Caffe runs it."""
    x = bgr
    for layer in layers:
        kind = layer["type"]
        if kind == "Convolution":
            x = conv(x, layer["w"], layer["b"], layer["stride"], layer["pad"], layer["group"])
        elif kind == "ReLU":
            x = np.maximum(x, 0)
        elif kind == "LRN":
            x = lrn(x)
        elif kind == "Pooling":
            x = max_pool(x)
        elif kind == "InnerProduct":
            x = x.reshape(x.shape[0], -1) @ layer["w"].T + layer["b"]
    return x  # fc8 (Softmax not applied: logits)


# ---------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return real_images(tmp_path_factory.mktemp("caffe-images"), 3, colour=True)  # colour: BGR vs RGB must show


@pytest.mark.parametrize(("v1", "caffenet"), [(False, False), (True, False), (False, True), (True, True)],
                         ids=["V2-layer", "V1-layers-legacy-shapes", "caffenet-V2", "caffenet-V1"])
def test_import_matches_caffe_semantics(v1: bool, caffenet: bool, images: list[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    layers = caffe_layers(rng, caffenet_order=caffenet)
    mean_bgr = rng.uniform(80, 150, (3, 256, 256))
    proto, model, mean = write_files(tmp_path / "caffe", layers, v1, mean_bgr)
    result = import_caffe(proto, model, tmp_path / "run", mean)
    assert result.format.startswith("V1" if v1 else "V2")
    order = {"lrn_order": "pool-norm"} if caffenet else {}
    assert result.options == {"lrn_k": 1.0, "lrn_scope": "all", **order, "widths": list(WIDTHS), "fc_width": FC}
    assert result.lrn_order == ("pool-norm" if caffenet else "norm-pool")

    loaded = load_model(tmp_path / "run", torch.device("cpu"))
    assert (loaded.name, loaded.image_size, loaded.crop, len(loaded.classes)) == ("alexnet", 256, 227, CLASSES)
    assert loaded.convention.channel_order == "RGB" and loaded.norm.mean_image is not None  # conv1 was turned to RGB
    batch = torch.stack([load_image(f, loaded.convention) for f in images])  # RGB uint8
    with torch.inference_mode():
        ours = loaded.model(eval_transform(loaded.convention).normalize(batch)).double().numpy()

    reference = caffe_reference(batch, mean_bgr, layers)
    assert np.abs(reference).max() > 1.0  # a live signal, not all zeros
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
    assert (ours.argmax(1) == reference.argmax(1)).all()
    if caffenet:  # the other order is a different function: the test would see a wrong order
        other = load_model(tmp_path / "run", torch.device("cpu"))
        swapped = models.create("alexnet", CLASSES, lrn_k=1.0, lrn_scope="all", widths=WIDTHS, fc_width=FC)
        swapped.load_state_dict(other.model.state_dict())
        with torch.inference_mode():
            wrong = swapped.eval()(eval_transform(loaded.convention).normalize(batch)).double().numpy()
        assert np.abs(wrong - reference).max() > 1e-3 * np.abs(reference).max()


def caffe_reference(batch: torch.Tensor, mean_bgr: np.ndarray, layers: list[dict]) -> np.ndarray:
    """Caffe's view of RGB uint8 crops: BGR, minus the BGR mean image's centre 227 crop, float64."""
    bgr = batch.numpy().astype(np.float64)[:, ::-1]
    off = (256 - 227) // 2
    return caffe_forward(bgr - mean_bgr[None, :, off : off + 227, off : off + 227], layers)


def test_caffenet_import_exports_to_onnx_and_matches_caffe(images: list[str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from alexnet.interop.onnx_model import OnnxModel

    rng = np.random.default_rng(3)
    layers = caffe_layers(rng, caffenet_order=True)
    mean_bgr = rng.uniform(80, 150, (3, 256, 256))
    proto, model, mean = write_files(tmp_path / "caffenet", layers, False, mean_bgr)
    code, out, err = run_main(capsys, "import", "caffe", str(proto), str(model), "--mean", str(mean), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "pool-norm" in out
    onnx_path = tmp_path / "caffenet.onnx"
    code, out, err = run_main(capsys, "export", str(tmp_path / "run"), "--format", "onnx", "--out", str(onnx_path), "--json")
    assert code == 0, err
    check = json.loads(out)
    assert check["max_abs_diff"] <= 1e-4 * check["max_abs_logit"]

    # onnxruntime against the float64 Caffe reference, on the same real (colour) pictures.
    ort_model = OnnxModel(onnx_path)
    batch = torch.stack([load_image(f, ort_model.convention) for f in images])
    reference = caffe_reference(batch, mean_bgr, layers)
    got = ort_model.logits(batch).astype(np.float64)
    assert np.abs(got - reference).max() <= 1e-4 * np.abs(reference).max()
    # The graph pools before each LRN, as CaffeNet does.
    ops = [n.op_type for n in onnx.load(str(onnx_path)).graph.node if n.op_type in ("LRN", "MaxPool")]
    assert ops == ["MaxPool", "LRN", "MaxPool", "LRN", "MaxPool"]


def test_cli_import_then_predict_and_misfits_are_one_line(
    images: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    mean_bgr = rng.uniform(80, 150, (3, 256, 256))
    proto, model, mean = write_files(tmp_path / "ok", caffe_layers(rng), False, mean_bgr)
    code, out, err = run_main(capsys, "import", "caffe", str(proto), str(model), "--mean", str(mean), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "BGR->RGB" in out and "k=1" in out and "mean image 256x256" in out
    code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), images[0], "--json", "--precision", "fp32")
    assert code == 0, err
    assert len(json.loads(out)[0]["predictions"]) == 5

    def import_error(folder: str, layers: list[dict], model_path: Path | None = None) -> tuple[int, str]:
        proto, model, _ = write_files(tmp_path / folder, layers, False, mean_bgr)
        code, _, err = run_main(capsys, "import", "caffe", str(proto), str(model_path or model), "--out", str(tmp_path / "x"))
        return code, err

    # Layer 1 in CaffeNet's order (pool, LRN), layer 2 in the paper's: the first misfit is norm2.
    assert_one_line_error(import_error("mixed", caffe_layers(rng, pool_first_in=(1,))), "'norm2'")
    assert_one_line_error(import_error("other", caffe_layers(rng, conv2_kernel=3)), "'conv2'")
    assert_one_line_error(import_error("missing", caffe_layers(rng), tmp_path / "none.caffemodel"), "not found")
    assert not (tmp_path / "x").exists()
