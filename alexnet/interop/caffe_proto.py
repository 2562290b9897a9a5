"""The part of Caffe's schema (``src/caffe/proto/caffe.proto``, package ``caffe``) that an
AlexNet import reads, built at run time with the ``protobuf`` package (no protoc, no Caffe).

Field names, numbers and types are caffe.proto's own (proto2), so ``.caffemodel`` and
``.binaryproto`` files parse with ``FromString`` and ``deploy.prototxt`` with ``text_format``;
fields outside this subset are skipped (binary: kept as unknown fields; text: ignored). Caffe
declares some of these integers ``uint32``; varints read the same as ``uint64``.

``NetParameter`` holds both net formats: ``layer`` (V2, field 100, ``type`` a string such as
``"Convolution"``) and the older ``layers`` (V1, field 2, ``type`` an enum such as
``CONVOLUTION``). A ``BlobProto`` gives its shape as ``shape.dim`` or, in older files, as the
legacy ``num/channels/height/width``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from alexnet.errors import UserError

PACKAGE = "caffe"

# V1LayerParameter.LayerType, complete (a V1 prototxt names these, and text parsing needs each).
V1_TYPES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
    "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
    "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33,
    "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
}  # fmt: skip

# message -> [(name, number, label, type, type_name or enum values, default)]; label: o(ptional) / r(epeated).
_MESSAGES: dict[str, list[tuple[Any, ...]]] = {
    "BlobShape": [("dim", 1, "r", "int64")],
    "BlobProto": [
        ("shape", 7, "o", "BlobShape"), ("data", 5, "r", "float"), ("double_data", 8, "r", "double"),
        ("num", 1, "o", "int64"), ("channels", 2, "o", "int64"), ("height", 3, "o", "int64"), ("width", 4, "o", "int64"),
    ],
    "NetStateRule": [("phase", 1, "o", "Phase")],
    "ConvolutionParameter": [
        ("num_output", 1, "o", "uint32"), ("bias_term", 2, "o", "bool", True), ("pad", 3, "r", "uint32"),
        ("kernel_size", 4, "r", "uint32"), ("group", 5, "o", "uint32", 1), ("stride", 6, "r", "uint32"),
        ("pad_h", 9, "o", "uint32"), ("pad_w", 10, "o", "uint32"), ("kernel_h", 11, "o", "uint32"),
        ("kernel_w", 12, "o", "uint32"), ("stride_h", 13, "o", "uint32"), ("stride_w", 14, "o", "uint32"),
        ("dilation", 18, "r", "uint32"),
    ],
    "InnerProductParameter": [("num_output", 1, "o", "uint32"), ("bias_term", 2, "o", "bool", True)],
    "LRNParameter": [
        ("local_size", 1, "o", "uint32", 5), ("alpha", 2, "o", "float", 1.0), ("beta", 3, "o", "float", 0.75),
        ("norm_region", 4, "o", "NormRegion"), ("k", 5, "o", "float", 1.0),
    ],
    "PoolingParameter": [
        ("pool", 1, "o", "PoolMethod"), ("kernel_size", 2, "o", "uint32"), ("stride", 3, "o", "uint32", 1),
        ("pad", 4, "o", "uint32"), ("kernel_h", 5, "o", "uint32"), ("kernel_w", 6, "o", "uint32"),
        ("stride_h", 7, "o", "uint32"), ("stride_w", 8, "o", "uint32"), ("pad_h", 9, "o", "uint32"),
        ("pad_w", 10, "o", "uint32"), ("global_pooling", 12, "o", "bool"),
    ],
    "InputParameter": [("shape", 1, "r", "BlobShape")],
    "LayerParameter": [
        ("name", 1, "o", "string"), ("type", 2, "o", "string"), ("bottom", 3, "r", "string"), ("top", 4, "r", "string"),
        ("blobs", 7, "r", "BlobProto"), ("include", 8, "r", "NetStateRule"), ("exclude", 9, "r", "NetStateRule"),
        ("convolution_param", 106, "o", "ConvolutionParameter"), ("inner_product_param", 117, "o", "InnerProductParameter"),
        ("input_param", 143, "o", "InputParameter"), ("lrn_param", 118, "o", "LRNParameter"),
        ("pooling_param", 121, "o", "PoolingParameter"),
    ],
    "V1LayerParameter": [
        ("bottom", 2, "r", "string"), ("top", 3, "r", "string"), ("name", 4, "o", "string"),
        ("include", 32, "r", "NetStateRule"), ("exclude", 33, "r", "NetStateRule"), ("type", 5, "o", "LayerType"),
        ("blobs", 6, "r", "BlobProto"), ("convolution_param", 10, "o", "ConvolutionParameter"),
        ("inner_product_param", 17, "o", "InnerProductParameter"), ("lrn_param", 18, "o", "LRNParameter"),
        ("pooling_param", 19, "o", "PoolingParameter"),
    ],
    "NetParameter": [
        ("name", 1, "o", "string"), ("input", 3, "r", "string"), ("input_shape", 8, "r", "BlobShape"),
        ("input_dim", 4, "r", "int64"), ("layer", 100, "r", "LayerParameter"), ("layers", 2, "r", "V1LayerParameter"),
    ],
}  # fmt: skip

# enum -> (the message it is nested in, or None for file level, values)
_ENUMS: dict[str, tuple[str | None, dict[str, int]]] = {
    "Phase": (None, {"TRAIN": 0, "TEST": 1}),
    "NormRegion": ("LRNParameter", {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}),
    "PoolMethod": ("PoolingParameter", {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}),
    "LayerType": ("V1LayerParameter", V1_TYPES),
}


@lru_cache(maxsize=1)
def messages() -> dict[str, type]:
    """The message classes of the subset, by name (``NetParameter``, ``BlobProto``, ...)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise UserError("the Caffe import needs the protobuf package: pip install 'alexnet[caffe]'") from None
    F = descriptor_pb2.FieldDescriptorProto
    scalar = {"int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE,
              "bool": F.TYPE_BOOL, "string": F.TYPE_STRING}  # fmt: skip
    file = descriptor_pb2.FileDescriptorProto(name="alexnet_caffe_subset.proto", package=PACKAGE, syntax="proto2")
    protos = {}
    for name, fields in _MESSAGES.items():
        msg = file.message_type.add(name=name)
        protos[name] = msg
        for name_, number, label, type_, *default in fields:
            f = msg.field.add(name=name_, number=number)
            f.label = F.LABEL_REPEATED if label == "r" else F.LABEL_OPTIONAL
            if type_ in scalar:
                f.type = scalar[type_]
            elif type_ in _ENUMS:
                f.type = F.TYPE_ENUM
                parent = _ENUMS[type_][0]
                f.type_name = f".{PACKAGE}.{parent}.{type_}" if parent else f".{PACKAGE}.{type_}"
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".{PACKAGE}.{type_}"
            if default:
                f.default_value = str(default[0]).lower() if isinstance(default[0], bool) else str(default[0])
    for enum_name, (parent, values) in _ENUMS.items():
        enum = protos[parent].enum_type.add(name=enum_name) if parent else file.enum_type.add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in _MESSAGES}
