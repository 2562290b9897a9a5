"""Weight initialisation schemes, applied by layer role (``conv1`` .. ``fc8``)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

INIT_SCHEMES = ("paper", "caffe", "cuda-convnet2", "kaiming", "torchvision")

# Paper section 5: "We initialized the weights in each layer from a zero-mean Gaussian
# distribution with standard deviation 0.01. We initialized the neuron biases in the second,
# fourth, and fifth convolutional layers, as well as in the fully-connected hidden layers, with
# the constant 1 ... We initialized the neuron biases in the remaining layers with the constant 0."
_PAPER_BIAS_ONE = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})

# Caffe's bvlc_alexnet train_val.prototxt: std 0.005 for fc6/fc7 and biases of 0.1 where the
# paper had 1 ("initialization to 1 gave flat loss", the model's readme).
_CAFFE_WEIGHT_STD = {"fc6": 0.005, "fc7": 0.005}
_CAFFE_BIAS = {"conv2": 0.1, "conv4": 0.1, "conv5": 0.1, "fc6": 0.1, "fc7": 0.1}

# The authors' later code, cuda-convnet2's layers-imagenet-1gpu.cfg: initW 0.03 for conv3-conv5
# (0.01 elsewhere) and initB 1 in the same layers as the paper. Its output-layer bias of -7 is
# the same for every class, which the softmax ignores, so it is left out.
_CONVNET2_WEIGHT_STD = {"conv3": 0.03, "conv4": 0.03, "conv5": 0.03}


def initialize(layers: Mapping[str, nn.Conv2d | nn.Linear], scheme: str) -> None:
    """Initialise ``layers`` (role name -> layer) in place with ``scheme``.

    Schemes: ``paper`` (N(0, 0.01), biases 1 in conv2/4/5 and fc6/7, else 0), ``caffe``
    (as bvlc_alexnet), ``cuda-convnet2`` (the paper's with std 0.03 in conv3-5), ``kaiming`` (He normal for ReLU layers, fan-in; the output layer
    N(0, 0.01); biases 0) and ``torchvision`` (keep PyTorch's default layer init).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    if scheme == "torchvision":
        return
    last = list(layers)[-1]
    for role, layer in layers.items():
        if scheme in ("paper", "cuda-convnet2"):
            std = _CONVNET2_WEIGHT_STD.get(role, 0.01) if scheme == "cuda-convnet2" else 0.01
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.constant_(layer.bias, 1.0 if role in _PAPER_BIAS_ONE else 0.0)
        elif scheme == "caffe":
            nn.init.normal_(layer.weight, 0.0, _CAFFE_WEIGHT_STD.get(role, 0.01))
            nn.init.constant_(layer.bias, _CAFFE_BIAS.get(role, 0.0))
        else:  # kaiming
            if role == last:
                nn.init.normal_(layer.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
