"""ONNX export of any run (or torchvision weights file), checked with onnxruntime, and ONNX inference.

The graph takes the normalised float32 ``N x C x crop x crop`` batch (dynamic ``N``) and gives
logits. LRN becomes ONNX's ``LRN`` operator: like Caffe and cuda-convnet, ONNX divides alpha by
``size`` (``y = x / (bias + alpha / size * sum x^2) ** beta``, window ``c - (size-1)//2 ..
c + ceil((size-1)/2)``: for size 5 the same 5 channels as ours), so ONNX's ``alpha`` is our
effective coefficient times ``size`` whatever our model's ``lrn_convention``. A per-tower LRN
(``lrn_scope="tower"``) becomes ``Split`` -> one ``LRN`` per tower -> ``Concat`` (ONNX's LRN has
no groups). Grouped convolutions stay ``Conv`` with ``group = 2``.

The model's input convention (:class:`~alexnet.data.convention.InputConvention`: short side,
crop, channel order, mean image or per-channel mean/std) is written as JSON into the model's
metadata (key :data:`METADATA_KEY`), with the class names (``alexnet.classes``) and the model
name, so ``alexnet predict model.onnx`` needs nothing else.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet.data.convention import InputConvention, eval_transform
from alexnet.data.images import load_image
from alexnet.errors import UserError
from alexnet.evaluation import LoadedModel, load_model
from alexnet.io import atomic_write
from alexnet.models.lrn import LocalResponseNorm

OPSET = 17
CHECK_IMAGES = 8
# Max abs logit difference onnxruntime vs PyTorch (fp32 both), relative to the logits' scale
# max(1, max |logit|): an absolute 1e-4 is ~3 float32 ulps at logit 450, which an imported Caffe
# net on raw 0-255 pixels (random weights in the tests) reaches; reordering a sum moves that much.
CHECK_TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "input", "logits"
METADATA_KEY = "alexnet.preprocessing"  # the InputConvention record, as JSON


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UserError("ONNX needs the optional packages onnx and onnxruntime: pip install 'alexnet[onnx]'") from None
    return onnx, onnxruntime


class _LRNOp(torch.autograd.Function):
    """Our LRN during tracing, emitted as one ONNX ``LRN`` node (``alpha``: ONNX's, i.e. ours x size)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        return LocalResponseNorm(size, alpha, beta, k, convention="code")(x)

    @staticmethod
    def symbolic(g: Any, x: Any, size: int, alpha: float, beta: float, k: float) -> Any:
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class _ExportableLRN(nn.Module):
    def __init__(self, lrn: LocalResponseNorm) -> None:
        super().__init__()
        self.lrn = lrn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.lrn
        parts = x.chunk(m.groups, 1) if m.groups > 1 else (x,)  # per tower: Split -> LRN each -> Concat
        out = [_LRNOp.apply(p, m.size, m.alpha_effective * m.size, m.beta, m.k) for p in parts]
        return torch.cat(out, 1) if len(out) > 1 else out[0]


def _exportable(model: nn.Module) -> nn.Module:
    """``model`` with every LRN module wrapped so it exports as ONNX ``LRN`` (same weights, shared)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LocalResponseNorm):
                setattr(parent, name, _ExportableLRN(child))
    return model


def onnx_bytes(loaded: LoadedModel, opset: int = OPSET) -> bytes:
    """The serialised ONNX model of ``loaded`` (CPU, fp32, dynamic batch), with its metadata."""
    onnx, _ = _require_onnx()
    import copy

    model = _exportable(copy.deepcopy(loaded.model).cpu().float().eval())
    example = torch.zeros(1, loaded.channels, loaded.crop, loaded.crop)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs onnxscript
        # and a translation for our LRN; this one turns our LRN into ONNX's with `symbolic`.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {
        METADATA_KEY: loaded.convention.to_json(),
        "alexnet.model": loaded.name,
        "alexnet.classes": json.dumps(list(loaded.classes)),
        "alexnet.source": Path(loaded.source).name,  # a file that travels names no folder of this machine
    }
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "alexnet"
    proto.doc_string = (
        f"{loaded.name}: input '{INPUT_NAME}' float32 N x {loaded.channels} x {loaded.crop} x {loaded.crop}, "
        f"normalised as metadata '{METADATA_KEY}' says; output '{OUTPUT_NAME}' N x {len(loaded.classes)}"
    )
    return proto.SerializeToString()


def check_images(convention: InputConvention, files: list[str] | None, count: int = CHECK_IMAGES) -> torch.Tensor:
    """The uint8 batch the export check runs: ``files`` decoded, or ``count`` fixed noise images."""
    c = convention
    if files:
        return torch.stack([load_image(f, c) for f in files])
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, c.channels, c.crop, c.crop), generator=gen, dtype=torch.uint8)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely onnxruntime matched PyTorch."""

    path: str
    model: str
    bytes: int
    images: int
    max_abs_diff: float
    max_abs_logit: float
    export_seconds: float


def export_onnx(
    source: str | Path, out: str | Path, check_files: list[str] | None = None, tolerance: float = CHECK_TOLERANCE
) -> ExportResult:
    """Export a run / checkpoint / torchvision state_dict to ONNX at ``out``, atomically.

    Before writing, onnxruntime runs the exported graph on the check images (``check_files``, or
    8 fixed noise images) and the max abs logit difference to PyTorch must be <= ``tolerance``
    times ``max(1, max |logit|)``; otherwise nothing is written and a :class:`UserError` says by
    how much it missed.
    """
    _, ort = _require_onnx()
    loaded = load_model(source, torch.device("cpu"))
    loaded.model.float()
    start = time.perf_counter()
    data = onnx_bytes(loaded)
    seconds = time.perf_counter() - start
    x = eval_transform(loaded.convention).normalize(check_images(loaded.convention, check_files))
    with torch.inference_mode():
        expected = loaded.model(x).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    bound = tolerance * max(1.0, float(np.abs(expected).max()))
    if not diff <= bound:
        raise UserError(f"ONNX check failed: onnxruntime's logits differ from PyTorch's by {diff:.3g} > {bound:.3g} "
                        f"({tolerance:g} x the logits' scale); {out} not written")  # fmt: skip
    try:
        atomic_write(out, lambda f: f.write(data))
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    return ExportResult(str(out), loaded.name, len(data), x.shape[0], diff, float(np.abs(expected).max()), seconds)


class OnnxModel:
    """An exported model under onnxruntime, with the input convention and classes from its metadata
    (:class:`alexnet.inference.OnnxPredictor` predicts with it)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        _, ort = _require_onnx()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for damaged files
            raise UserError(f"{path} is not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise UserError(f"{path} has no alexnet preprocessing metadata; export it with `alexnet export`")
        try:
            self.convention = InputConvention.from_json(meta[METADATA_KEY])
            classes = json.loads(meta.get("alexnet.classes", "[]"))
        except ValueError as e:  # name the file: the message alone does not say which
            raise UserError(f"{path}: unreadable or unusable preprocessing metadata ({e})") from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise UserError(f"{path}: its alexnet.classes metadata is not a list of names")
        self.name = meta.get("alexnet.model", "onnx")
        self.source = str(path)
        if not classes:  # unnamed: numbered, as many as the graph has outputs
            c = self.convention
            classes = [str(i) for i in range(self.logits(torch.zeros(1, c.channels, c.crop, c.crop, dtype=torch.uint8)).shape[1])]
        self.classes: tuple[str, ...] = tuple(classes)

    def logits(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 ``N,C,crop,crop`` images -> ``N x classes`` logits."""
        x = eval_transform(self.convention).normalize(batch).numpy()
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
