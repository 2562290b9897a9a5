"""Caffe files written by hand for the import tests: a caffemodel, prototxt and mean file from
caffe.proto's field numbers with a tiny protobuf wire encoder (not the importer's schema code):
BlobProto shape 7, data 5, legacy num/channels/height/width 1-4; NetParameter layer 100 (V2),
layers 2 (V1); LayerParameter name 1, type 2, blobs 7; V1LayerParameter name 4, type 5 (enum),
blobs 6. The net is AlexNet's topology at 227 px with narrow widths (the converter reads widths
from the blobs), so a float64 reference forward pass stays fast."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

WIDTHS, FC, CLASSES = (8, 16, 24, 24, 16), 32, 10
V1 = {"Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14, "Dropout": 6, "Softmax": 20}

# ------------------------------------------------------------------ protobuf wire format, by hand


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: float | bytes | str, kind: str = "varint") -> bytes:
    """One field: varint (wire type 0), 32-bit float (5), or length-delimited (2) for bytes/str."""
    if isinstance(value, (bytes, str)):
        kind = "bytes"
    if kind == "varint":
        return varint(number << 3 | 0) + varint(int(value))
    if kind == "float":
        return varint(number << 3 | 5) + struct.pack("<f", value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def blob(arr: np.ndarray, legacy: bool) -> bytes:
    data = field(5, arr.astype("<f4").tobytes(), "bytes")  # packed floats
    if legacy:  # num, channels, height, width: always 4-D, leading 1s
        dims = (1,) * (4 - arr.ndim) + arr.shape
        return b"".join(field(i + 1, d) for i, d in enumerate(dims)) + data
    return field(7, b"".join(field(1, d) for d in arr.shape)) + data  # BlobShape.dim


def caffe_layers(rng: np.random.Generator, caffenet_order: bool = False, conv2_kernel: int = 5,
                 pool_first_in: tuple[int, ...] | None = None) -> list[dict]:
    """The bvlc_alexnet deploy net with random weights (Caffe's layout: out x in/groups x kh x kw);
    with ``caffenet_order`` CaffeNet's (bvlc_reference_caffenet: pool before LRN in layers 1 and 2),
    with ``pool_first_in`` that order in the given layers only."""
    c1, c2, c3, c4, c5 = WIDTHS
    spec = [
        ("conv1", "Convolution", {"num_output": c1, "kernel": 11, "stride": 4, "pad": 0, "group": 1, "cin": 3}),
        ("relu1", "ReLU", {}), ("norm1", "LRN", {}), ("pool1", "Pooling", {}),
        ("conv2", "Convolution", {"num_output": c2, "kernel": conv2_kernel, "stride": 1, "pad": 2, "group": 2, "cin": c1}),
        ("relu2", "ReLU", {}), ("norm2", "LRN", {}), ("pool2", "Pooling", {}),
        ("conv3", "Convolution", {"num_output": c3, "kernel": 3, "stride": 1, "pad": 1, "group": 1, "cin": c2}), ("relu3", "ReLU", {}),
        ("conv4", "Convolution", {"num_output": c4, "kernel": 3, "stride": 1, "pad": 1, "group": 2, "cin": c3}), ("relu4", "ReLU", {}),
        ("conv5", "Convolution", {"num_output": c5, "kernel": 3, "stride": 1, "pad": 1, "group": 2, "cin": c4}), ("relu5", "ReLU", {}),
        ("pool5", "Pooling", {}),
        ("fc6", "InnerProduct", {"num_output": FC, "cin": c5 * 36}), ("relu6", "ReLU", {}), ("drop6", "Dropout", {}),
        ("fc7", "InnerProduct", {"num_output": FC, "cin": FC}), ("relu7", "ReLU", {}), ("drop7", "Dropout", {}),
        ("fc8", "InnerProduct", {"num_output": CLASSES, "cin": FC}), ("prob", "Softmax", {}),
    ]  # fmt: skip
    for i in pool_first_in if pool_first_in is not None else (1, 2) if caffenet_order else ():
        at = 2 if i == 1 else 6  # CaffeNet: pool1 before norm1, pool2 before norm2
        spec[at], spec[at + 1] = spec[at + 1], spec[at]
    layers = []
    for name, kind, p in spec:
        layer = {"name": name, "type": kind, **p}
        if kind == "Convolution":
            fan_in = p["cin"] // p["group"] * p["kernel"] ** 2
            layer["w"] = rng.normal(0, np.sqrt(2 / fan_in), (p["num_output"], p["cin"] // p["group"], p["kernel"], p["kernel"]))
            layer["b"] = rng.normal(0, 0.1, p["num_output"])
        elif kind == "InnerProduct":
            layer["w"] = rng.normal(0, np.sqrt(2 / p["cin"]), (p["num_output"], p["cin"]))
            layer["b"] = rng.normal(0, 0.1, p["num_output"])
        layers.append(layer)
    return layers


def layer_params(layer: dict, v1: bool) -> bytes:
    kind = layer["type"]
    if kind == "Convolution":  # ConvolutionParameter: num_output 1, pad 3, kernel_size 4, group 5, stride 6
        body = field(1, layer["num_output"]) + field(3, layer["pad"]) + field(4, layer["kernel"]) + field(5, layer["group"])
        return field(10 if v1 else 106, body + field(6, layer["stride"]))
    if kind == "InnerProduct":  # InnerProductParameter.num_output 1
        return field(17 if v1 else 117, field(1, layer["num_output"]))
    if kind == "LRN":  # local_size 1, alpha 2, beta 3 (k 5 left at Caffe's default of 1)
        return field(18 if v1 else 118, field(1, 5) + field(2, 1e-4, "float") + field(3, 0.75, "float"))
    if kind == "Pooling":  # pool 1 (MAX = 0), kernel_size 2, stride 3
        return field(19 if v1 else 121, field(1, 0) + field(2, 3) + field(3, 2))
    return b""


def caffemodel(layers: list[dict], v1: bool) -> bytes:
    out = field(1, "AlexNet")
    for layer in layers:
        blobs = [layer[k] for k in ("w", "b") if k in layer]
        if v1:
            body = field(4, layer["name"]) + field(5, V1[layer["type"]])
            body += b"".join(field(6, blob(x, legacy=True)) for x in blobs)
            out += field(2, body + layer_params(layer, v1))
        else:
            body = field(1, layer["name"]) + field(2, layer["type"])
            body += b"".join(field(7, blob(x, legacy=False)) for x in blobs)
            out += field(100, body + layer_params(layer, v1))
    return out


def prototxt(layers: list[dict], v1: bool) -> str:
    """The deploy file, as Caffe's text format (with the fillers and lr settings real files carry)."""
    lines = ['name: "AlexNet"']
    if v1:
        lines += ['input: "data"', "input_dim: 10", "input_dim: 3", "input_dim: 227", "input_dim: 227"]
    else:
        lines.append('layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } } }')
    for layer in layers:
        kind, name = layer["type"], layer["name"]
        params = ""
        if kind == "Convolution":
            params = (f"convolution_param {{ num_output: {layer['num_output']} pad: {layer['pad']} kernel_size: {layer['kernel']} "
                      f"group: {layer['group']} stride: {layer['stride']} weight_filler {{ type: \"gaussian\" std: 0.01 }} }}")  # fmt: skip
        elif kind == "InnerProduct":
            params = f"inner_product_param {{ num_output: {layer['num_output']} }}"
        elif kind == "LRN":
            params = "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }"
        elif kind == "Pooling":
            params = "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"
        if v1:
            enum = {4: "CONVOLUTION", 18: "RELU", 15: "LRN", 17: "POOLING", 14: "INNER_PRODUCT", 6: "DROPOUT", 20: "SOFTMAX"}
            lines.append(f'layers {{ name: "{name}" type: {enum[V1[kind]]} blobs_lr: 1 {params} }}')
        else:
            lines.append(f'layer {{ name: "{name}" type: "{kind}" param {{ lr_mult: 1 decay_mult: 1 }} {params} }}')
    return "\n".join(lines) + "\n"


def write_files(folder: Path, layers: list[dict], v1: bool, mean_bgr: np.ndarray) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    proto, model, mean = folder / "deploy.prototxt", folder / "weights.caffemodel", folder / "mean.binaryproto"
    proto.write_text(prototxt(layers, v1))
    model.write_bytes(caffemodel(layers, v1))
    mean.write_bytes(blob(mean_bgr[None], legacy=True))  # as Caffe's imagenet_mean.binaryproto: 1 x 3 x 256 x 256
    return proto, model, mean
