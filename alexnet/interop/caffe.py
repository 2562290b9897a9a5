"""``alexnet import caffe``: BVLC's ``bvlc_alexnet`` and CaffeNet (and nets of their shape) into an ordinary run folder.

What a conversion must get right, and where it happens here:

* **The net**: read from ``deploy.prototxt`` (text) in either format, ``layer`` (V2) or ``layers``
  (V1); weights from the ``.caffemodel`` (binary ``NetParameter``), matched by layer name. The
  layer sequence must be the paper's (conv-ReLU-LRN-pool twice, three convs, pool, three inner
  products; Dropout/Softmax/data layers are skipped); the first layer that does not fit is named.
  CaffeNet (``bvlc_reference_caffenet``) pools *before* its LRN (conv-ReLU-pool-LRN): the order
  is read from the layer after ``relu1`` and becomes the model's ``lrn_order`` (``pool-norm``);
  both layers 1 and 2 must then follow it.
* **Groups** come from the weight blobs' shapes (``out x in/groups x kh x kw``): conv2, conv4
  and conv5 must have 2 (the paper's two GPUs), conv1 and conv3 one.
* **LRN**: Caffe's ``k`` (default 1, the paper's 2) becomes the model's ``lrn_k``; Caffe divides
  alpha by ``local_size`` like our ``lrn_convention="code"``; Caffe's LRN layer knows no groups,
  so its windows cross the tower boundary: ``lrn_scope="all"``, written into the run explicitly.
* **Colour order**: Caffe's input is BGR (OpenCV); conv1's input channels are reversed so the
  run takes RGB like every other run, and the mean is reversed the same way.
* **The mean** (``--mean``): a ``.binaryproto`` ``BlobProto`` or a ``.npy``, either
  ``3 x S x S`` (a mean image; stored as the run's mean image, which prediction centre-crops) or
  3 values (per channel). Pixels stay in 0-255 and are not divided by a std, as in Caffe.
* **Sizes**: widths and the fc width are read from the blobs (the paper's by default), the input
  is the 227 crop of a ``S``-pixel image (256 without a mean image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet import models
from alexnet.data.convention import InputConvention, InputNorm
from alexnet.errors import UserError
from alexnet.evaluation import imagenet_class_names
from alexnet.interop.caffe_proto import V1_TYPES, messages
from alexnet.interop.runs import check_out, write_run
from alexnet.io import read_regular_file
from alexnet.models.alexnet import PAPER_SHAPE

# V1 enum -> V2 type string, for the types an AlexNet deploy file holds.
_V1_TO_V2 = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "POOLING": "Pooling",
             "RELU": "ReLU", "DROPOUT": "Dropout", "SOFTMAX": "Softmax", "DATA": "Data", "SOFTMAX_LOSS": "SoftmaxWithLoss",
             "ACCURACY": "Accuracy", "SPLIT": "Split", "SILENCE": "Silence", "MEMORY_DATA": "MemoryData",
             "IMAGE_DATA": "ImageData", "DUMMY_DATA": "DummyData"}  # fmt: skip
_SKIPPED = {"Dropout", "Softmax", "Data", "Input", "SoftmaxWithLoss", "Accuracy", "Split", "Silence", "MemoryData",
            "ImageData", "DummyData", "HDF5Data", "WindowData"}  # fmt: skip
# The paper's sequence (Figure 2, section 3.5): what each layer of the net must be, in order.
ALEXNET_SEQUENCE = (
    ("conv1", "Convolution"), ("relu1", "ReLU"), ("norm1", "LRN"), ("pool1", "Pooling"),
    ("conv2", "Convolution"), ("relu2", "ReLU"), ("norm2", "LRN"), ("pool2", "Pooling"),
    ("conv3", "Convolution"), ("relu3", "ReLU"), ("conv4", "Convolution"), ("relu4", "ReLU"),
    ("conv5", "Convolution"), ("relu5", "ReLU"), ("pool5", "Pooling"),
    ("fc6", "InnerProduct"), ("relu6", "ReLU"), ("fc7", "InnerProduct"), ("relu7", "ReLU"), ("fc8", "InnerProduct"),
)  # fmt: skip
# CaffeNet's: pool1 before norm1, pool2 before norm2 (the roles keep their names).
CAFFENET_SEQUENCE = tuple(ALEXNET_SEQUENCE[i] for i in (0, 1, 3, 2, 4, 5, 7, 6, *range(8, len(ALEXNET_SEQUENCE))))
SEQUENCES = {"norm-pool": ALEXNET_SEQUENCE, "pool-norm": CAFFENET_SEQUENCE}
GROUPS = {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}  # section 3.2
CROP = PAPER_SHAPE.image_size  # 227
DEFAULT_IMAGE_SIZE = 256  # section 2: images rescaled to 256x256, crops of 227 taken


@dataclass(frozen=True)
class Layer:
    """One layer of a Caffe net, whatever the file's format."""

    name: str
    type: str
    proto: Any  # the LayerParameter or V1LayerParameter


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_caffe` wrote."""

    run: str
    checkpoint: str
    format: str  # "V2 (layer)" or "V1 (layers)"
    num_classes: int
    lrn_k: float
    lrn_order: str  # "norm-pool" (bvlc_alexnet, the paper) or "pool-norm" (CaffeNet)
    mean: str
    options: dict[str, Any]


# bvlc_alexnet's caffemodel is 233 MB; a larger file (or a FIFO, a device) is refused unread.
MAX_CAFFE_BYTES = 2 << 30
# A deploy prototxt nests 3 deep (net > layer > param); protobuf's text parser recurses once per
# level, so a file nested thousands deep is refused before it is parsed.
MAX_PROTOTXT_DEPTH = 64


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path, MAX_CAFFE_BYTES)
    except UserError as e:
        raise UserError(f"{what} {e}") from None
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_net_text(path: str | Path) -> Any:
    """A ``.prototxt`` as a ``NetParameter`` (fields outside the AlexNet subset are ignored)."""
    from google.protobuf import text_format

    path = Path(path)
    net = messages()["NetParameter"]()
    try:
        text = _read(path, "prototxt").decode("utf-8")
        if _nesting(text) > MAX_PROTOTXT_DEPTH:
            raise UserError(f"{path} nests messages more than {MAX_PROTOTXT_DEPTH} deep; no Caffe net does: not a deploy prototxt")
        text_format.Parse(text, net, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a Caffe prototxt: {str(e).splitlines()[0][:200]}") from None
    return net


def _nesting(text: str) -> int:
    """The deepest ``{``/``<`` nesting of protobuf text, not counting brackets in strings or comments."""
    depth = deepest = 0
    quote = ""
    comment = escaped = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote or ch == "\n":
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "{<":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}>":
            depth -= 1
    return deepest


def read_net_binary(path: str | Path) -> Any:
    """A ``.caffemodel`` as a ``NetParameter``."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    net = messages()["NetParameter"]()
    try:
        net.ParseFromString(_read(path, "caffemodel"))
    except DecodeError as e:
        raise UserError(f"{path} is not a Caffe caffemodel (binary NetParameter): {e}") from None
    if not net.layer and not net.layers:
        raise UserError(f"{path} holds no layers; is it a caffemodel?")
    return net


def layers_of(net: Any) -> tuple[list[Layer], str]:
    """The layers of a net in order (V2 ``layer`` or V1 ``layers``) and which format it was."""
    if net.layer:
        return [Layer(p.name, p.type, p) for p in net.layer if not _train_only(p)], "V2 (layer)"
    names = {v: k for k, v in V1_TYPES.items()}
    out = []
    for p in net.layers:
        if _train_only(p):
            continue
        enum = names.get(p.type, str(p.type))
        out.append(Layer(p.name, _V1_TO_V2.get(enum, enum), p))
    return out, "V1 (layers)"


def _train_only(p: Any) -> bool:
    return any(rule.HasField("phase") and rule.phase == 0 for rule in p.include)


def blob_array(blob: Any) -> np.ndarray:
    """A ``BlobProto`` as float32, shaped by ``shape.dim`` or the legacy num/channels/height/width."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
    values = blob.double_data if len(blob.double_data) else blob.data
    arr = np.fromiter(values, dtype=np.float64 if len(blob.double_data) else np.float32, count=len(values))
    if arr.size != int(np.prod(shape)):
        raise UserError(f"a blob says shape {shape} but holds {arr.size} values; the file is damaged")
    return arr.reshape(shape).astype(np.float32)


def _squeeze_legacy(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Legacy blobs are always 4-D (``1 x 1 x out x in`` for weights of fc layers): drop leading 1s."""
    while arr.ndim > ndim and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _conv_geometry(p: Any) -> tuple[int, int, int]:
    """(kernel, stride, pad) of a square ConvolutionParameter/PoolingParameter."""

    def one(values: Any, h: str, w: str, default: int) -> int:
        if p.HasField(h) or p.HasField(w):
            if getattr(p, h) != getattr(p, w):
                raise ValueError("non-square")
            return int(getattr(p, h))
        if isinstance(values, int):
            return values
        if len(values) == 0:
            return default
        if len(set(values)) != 1:
            raise ValueError("non-square")
        return int(values[0])

    kernel = one(p.kernel_size, "kernel_h", "kernel_w", 0)
    stride = one(p.stride, "stride_h", "stride_w", 1)
    pad = one(p.pad, "pad_h", "pad_w", 0)
    return kernel, stride, pad


def _misfit(layer: Layer, why: str) -> UserError:
    return UserError(f"layer {layer.name!r} ({layer.type}) does not fit the paper's AlexNet: {why}")


def _input_side(net: Any, layers: list[Layer]) -> int | None:
    dims: list[int] = []
    if len(net.input_shape):
        dims = [int(d) for d in net.input_shape[0].dim]
    elif len(net.input_dim):
        dims = [int(d) for d in net.input_dim]
    for layer in layers:
        if layer.type == "Input" and len(layer.proto.input_param.shape):
            dims = [int(d) for d in layer.proto.input_param.shape[0].dim]
    return dims[-1] if len(dims) == 4 else None


def load_mean(path: str | Path) -> np.ndarray:
    """A Caffe mean (``.binaryproto`` BlobProto or ``.npy``) as float32 ``3 x S x S`` or ``3``, BGR order."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"mean file not found: {path}") from None
        except (OSError, ValueError) as e:
            raise UserError(f"{path} is not a readable .npy mean: {e}") from None
    else:
        from google.protobuf.message import DecodeError

        blob = messages()["BlobProto"]()
        try:
            blob.ParseFromString(_read(path, "mean file"))
        except DecodeError as e:
            raise UserError(f"{path} is not a Caffe .binaryproto mean (BlobProto): {e}") from None
        arr = blob_array(blob)
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 1 and arr.shape[0] == 1:  # 1 x 3 x S x S, 1 x 3
        arr = arr[0]
    if arr.shape == (3,) or (arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[1] == arr.shape[2] >= CROP):
        return arr
    raise UserError(f"{path}: a mean must be 3 x S x S (S >= {CROP}) or 3 values per channel, got shape {tuple(arr.shape)}")


def import_caffe(
    prototxt: str | Path, caffemodel: str | Path, out: str | Path, mean: str | Path | None = None, force: bool = False
) -> ImportResult:
    """Convert a Caffe AlexNet (deploy prototxt + caffemodel [+ mean]) into the run folder ``out``
    (new or empty; ``force``: replace an earlier import there)."""
    check_out(out, force)  # refuse before reading a 240 MB caffemodel; write_run checks again under the lock
    net = read_net_text(prototxt)
    layers, fmt = layers_of(net)
    if not layers:
        raise UserError(f"{prototxt} defines no layers")
    weights_net = read_net_binary(caffemodel)
    weights = {layer.name: list(layer.proto.blobs) for layer in layers_of(weights_net)[0] if len(layer.proto.blobs)}

    compute = [layer for layer in layers if layer.type not in _SKIPPED]
    # bvlc_alexnet normalises then pools (the paper), CaffeNet pools then normalises: the layer
    # after relu1 tells which; layer 2 must then do the same.
    lrn_order = "pool-norm" if len(compute) > 2 and compute[2].type == "Pooling" else "norm-pool"
    placed = list(zip(compute, SEQUENCES[lrn_order]))
    blobs, lrn_k = _paper_layers(compute, lrn_order, weights, f"{caffemodel} has no weights for layer {{!r}} of {prototxt}")
    side = _input_side(net, layers)
    if side is not None and side != CROP:
        raise UserError(f"{prototxt} takes {side}x{side} input; the paper's AlexNet takes {CROP}x{CROP}")
    options, num_classes = _model_options(blobs, placed, lrn_k, lrn_order)
    model = models.create("alexnet", num_classes, **options)
    _load_blobs(model, blobs, placed)
    image_size, norm, mean_text = _input_norm(mean)
    classes = list(imagenet_class_names()) if num_classes == 1000 else [str(i) for i in range(num_classes)]
    provenance = {"from": "caffe", "prototxt": str(prototxt), "caffemodel": str(caffemodel),
                  "mean": str(mean) if mean else None, "format": fmt, "net_name": net.name}  # fmt: skip
    # conv1's input channels were turned from Caffe's BGR to RGB (_load_blobs): the run takes RGB pixels.
    convention = InputConvention(3, image_size, CROP, norm, channel_order="RGB", pixel_scale=255.0)
    ckpt = write_run(out, model, "alexnet", options, classes, convention, f"caffe:{Path(caffemodel).name}", provenance, force)
    return ImportResult(str(out), str(ckpt), fmt, num_classes, float(lrn_k), lrn_order, mean_text, options)


def _paper_layers(
    compute: list[Layer], lrn_order: str, weights: dict[str, list[Any]], no_weights: str
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], float]:
    """The weight and bias blobs of each role (conv1 ... fc8) and the LRN's k, checking that the
    layers are the paper's in ``lrn_order``; ``no_weights`` words a layer without weights."""
    sequence = SEQUENCES[lrn_order]
    blobs: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    lrn_k: float | None = None
    for i, (role, kind) in enumerate(sequence):
        if i >= len(compute):
            raise UserError(f"the net ends after {len(compute)} layers; the paper's AlexNet has {role} ({kind}) next")
        layer = compute[i]
        if layer.type != kind:
            order = "" if i < 3 else f" (layer 1 {'normalises then pools' if lrn_order == 'norm-pool' else 'pools then normalises'})"
            raise _misfit(layer, f"expected {kind} in {role}'s place{order}")
        if kind in ("Convolution", "InnerProduct"):
            if layer.name not in weights:
                raise UserError(no_weights.format(layer.name))
            found = weights[layer.name]
            w = _squeeze_legacy(blob_array(found[0]), 4 if kind == "Convolution" else 2)
            b = _squeeze_legacy(blob_array(found[1]), 1) if len(found) > 1 else None
            blobs[role] = (w, b)
        if kind == "Convolution":
            _check_convolution(layer, role)
        elif kind == "LRN":
            lrn_k = _checked_lrn_k(layer, lrn_k)
        elif kind == "Pooling":
            _check_pooling(layer)
    if len(compute) > len(sequence):
        raise _misfit(compute[len(sequence)], "the paper's AlexNet ends with fc8")
    assert lrn_k is not None  # both sequences hold two LRN layers
    return blobs, lrn_k


def _check_convolution(layer: Layer, role: str) -> None:
    p = layer.proto.convolution_param
    try:
        kernel, stride, pad = _conv_geometry(p)
    except ValueError:
        raise _misfit(layer, "non-square kernel, stride or padding") from None
    expected = {"conv1": (11, 4, 0), "conv2": (5, 1, 2)}.get(role, (3, 1, 1))
    if (kernel, stride, pad) != expected:
        raise _misfit(layer, f"kernel/stride/pad {kernel}/{stride}/{pad}, expected {expected[0]}/{expected[1]}/{expected[2]}")
    if len(p.dilation) and set(p.dilation) != {1}:
        raise _misfit(layer, "dilated convolution")


def _checked_lrn_k(layer: Layer, lrn_k: float | None) -> float:
    """The LRN layer's k, checking its other parameters are the paper's and k is norm1's (``lrn_k``)."""
    p = layer.proto.lrn_param
    if p.norm_region != 0 or p.local_size != 5 or not np.isclose(p.alpha, 1e-4) or not np.isclose(p.beta, 0.75):
        raise _misfit(layer, f"LRN size {p.local_size}, alpha {p.alpha:g}, beta {p.beta:g} (the paper's: 5, 1e-4, 0.75 across channels)")
    if lrn_k is not None and p.k != lrn_k:
        raise _misfit(layer, f"k = {p.k:g} differs from norm1's {lrn_k:g}")
    return float(p.k)


def _check_pooling(layer: Layer) -> None:
    p = layer.proto.pooling_param
    try:
        geometry = _conv_geometry(p)
    except ValueError:
        raise _misfit(layer, "non-square pooling") from None
    if p.pool != 0 or p.global_pooling or geometry != (3, 2, 0):
        raise _misfit(layer, "expected max pooling 3x3 stride 2 (section 3.4)")


def _model_options(
    blobs: dict[str, tuple[np.ndarray, np.ndarray | None]], placed: list[tuple[Layer, tuple[str, str]]], lrn_k: float,
    lrn_order: str,
) -> tuple[dict[str, Any], int]:
    """The ``alexnet`` model options and class count the blobs' shapes imply (checked against the
    paper's groups and the prototxt's)."""
    # Widths from the blobs: conv weights are out x in/groups x k x k, fc weights out x in.
    widths = tuple(int(blobs[f"conv{i}"][0].shape[0]) for i in range(1, 6))
    in_channels = int(blobs["conv1"][0].shape[1])
    previous = (in_channels, *widths[:4])
    for i, role in enumerate(("conv1", "conv2", "conv3", "conv4", "conv5")):
        per_group = int(blobs[role][0].shape[1])
        layer = _layer_of(placed, role)
        if per_group == 0 or previous[i] % per_group:
            raise _misfit(layer, f"weights {blobs[role][0].shape} do not divide the {previous[i]} input channels")
        groups = previous[i] // per_group
        if groups != GROUPS[role]:
            raise _misfit(layer, f"{groups} group(s) by its weights' shape; the paper's {role} has {GROUPS[role]}")
        if layer.proto.convolution_param.group != groups:
            raise _misfit(layer, f"group {layer.proto.convolution_param.group} in the prototxt, {groups} by the weights")
    if in_channels != 3:
        raise _misfit(placed[0][0], f"{in_channels} input channels; Caffe's AlexNet reads 3 (BGR)")
    if any(w % 2 for w in widths):
        raise _misfit(placed[0][0], f"widths {widths} must be even (two towers)")
    fc_width = int(blobs["fc6"][0].shape[0])
    options: dict[str, Any] = {"lrn_k": lrn_k, "lrn_scope": "all"}  # Caffe's LRN ignores groups
    if lrn_order != "norm-pool":
        options["lrn_order"] = lrn_order
    if widths != PAPER_SHAPE.widths:
        options["widths"] = list(widths)
    if fc_width != PAPER_SHAPE.fc_width:
        options["fc_width"] = fc_width
    return options, int(blobs["fc8"][0].shape[0])


def _layer_of(placed: list[tuple[Layer, tuple[str, str]]], role: str) -> Layer:
    return next(layer for layer, (r, _) in placed if r == role)


def _load_blobs(model: torch.nn.Module, blobs: dict[str, tuple[np.ndarray, np.ndarray | None]],
                placed: list[tuple[Layer, tuple[str, str]]]) -> None:  # fmt: skip
    """Copy the blobs into ``model``'s layers, conv1's input channels turned from BGR to RGB."""
    roles = model.layers_by_role()
    state = {}
    for role, (w, b) in blobs.items():
        target = roles[role]
        if role == "conv1":  # BGR -> RGB: Caffe's first input channel is blue
            w = w[:, ::-1]
        if tuple(w.shape) != tuple(target.weight.shape):
            raise _misfit(_layer_of(placed, role), f"weights {tuple(w.shape)}, expected {tuple(target.weight.shape)}")
        state[id(target.weight)] = torch.from_numpy(np.ascontiguousarray(w))
        bias = np.zeros(w.shape[0], np.float32) if b is None else b
        if tuple(bias.shape) != tuple(target.bias.shape):
            raise _misfit(_layer_of(placed, role), f"bias {tuple(bias.shape)}, expected {tuple(target.bias.shape)}")
        state[id(target.bias)] = torch.from_numpy(np.ascontiguousarray(bias))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(state[id(p)])


def _input_norm(mean: str | Path | None) -> tuple[int, InputNorm, str]:
    """The input size, normalisation and its description that the ``mean`` file (if any) implies."""
    image_size, norm, mean_text = DEFAULT_IMAGE_SIZE, InputNorm.identity(3), "none (raw 0-255 pixels)"
    if mean is not None:
        bgr = load_mean(mean)
        rgb = np.ascontiguousarray(bgr[::-1])  # Caffe's means are BGR like its input
        if rgb.ndim == 1:
            norm = InputNorm(tuple(float(v) for v in rgb), (1.0, 1.0, 1.0))
            mean_text = "per channel (RGB) " + ", ".join(f"{v:.2f}" for v in rgb)
        else:
            image_size = int(rgb.shape[1])
            channel = tuple(float(v) for v in rgb.reshape(3, -1).mean(axis=1))
            norm = InputNorm(channel, (1.0, 1.0, 1.0), torch.from_numpy(rgb))
            mean_text = f"mean image {rgb.shape[1]}x{rgb.shape[2]}"
    return image_size, norm, mean_text
