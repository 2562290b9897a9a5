"""Weights in and models out: Caffe's ``bvlc_alexnet``/CaffeNet import, ONNX export.

Each conversion carries the preprocessing its model expects (Caffe: BGR input order turned to
RGB, the mean image, LRN with k = 1; ONNX: the normalisation written into the model's
metadata), so the pixels a converted model sees are the pixels it was trained on.

Optional dependencies: ``alexnet[onnx]`` (onnx, onnxruntime) for :mod:`.onnx_model`,
``alexnet[caffe]`` (protobuf) for :mod:`.caffe`.
"""
