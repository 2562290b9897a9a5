"""The paper's network (Krizhevsky, Sutskever, Hinton 2012, section 3 and Figure 2).

One class builds both the ImageNet net (``alexnet``, 227x227x3 input) and the CPU-sized net
(``alexnet-small``, 28-32 px, any channel count): same topology, different widths, kernel sizes
and strides, given by an :class:`AlexNetShape`. Ablation switches are constructor options.

Layer names follow the paper (``conv1`` .. ``conv5``, ``fc6`` .. ``fc8``) so that the
state_dict reads like Figure 2.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import torch
from torch import nn

from alexnet.models.init import initialize
from alexnet.models.lrn import LocalResponseNorm


@dataclass(frozen=True)
class AlexNetShape:
    """Widths and geometry of one AlexNet-topology network.

    ``widths`` are the channel counts of conv1..conv5 summed over both towers.
    """

    widths: tuple[int, int, int, int, int]
    fc_width: int
    conv1_kernel: int
    conv1_stride: int
    conv1_padding: int
    conv2_kernel: int
    image_size: int


# Section 3.5 and Figure 2: 96-256-384-384-256 kernels, 11x11 stride 4 then 5x5 then 3x3,
# 4096-4096 fully connected. 227 is the input size the arithmetic needs ((227 - 11) / 4 + 1 = 55).
PAPER_SHAPE = AlexNetShape(
    widths=(96, 256, 384, 384, 256),
    fc_width=4096,
    conv1_kernel=11,
    conv1_stride=4,
    conv1_padding=0,
    conv2_kernel=5,
    image_size=227,
)

# CPU-sized: conv1 5x5 stride 1 keeps 28 px at 28 (then 13, 6 and 2 after the three pools).
# Widths chosen by measurement for `alexnet demo` (docs/RESULTS.md): the convolutions set
# the time per epoch (32-64-96-96-64: ~25 s on 2 cores; 48-96-144-144-96 was 1.7x slower),
# the wide fc layers are nearly free and learn faster. Every width is even (two towers).
SMALL_SHAPE = AlexNetShape(
    widths=(32, 64, 96, 96, 64),
    fc_width=1024,
    conv1_kernel=5,
    conv1_stride=1,
    conv1_padding=2,
    conv2_kernel=5,
    image_size=28,
)

Activation = Literal["relu", "tanh"]
Pooling = Literal["overlapping", "non-overlapping"]
# Where the LRN sits in layers 1 and 2. "norm-pool" is the paper's (section 3.5: "Max-pooling
# layers ... follow both response-normalization layers"), and bvlc_alexnet's; "pool-norm" is
# CaffeNet's (bvlc_reference_caffenet), which pools first and normalises the pooled maps.
LRNOrder = Literal["norm-pool", "pool-norm"]
LRN_ORDERS: tuple[str, ...] = ("norm-pool", "pool-norm")
# Which maps an LRN window may reach in the two-tower net. "tower": only the maps of its own
# tower, as on the paper's two GPUs (section 3.2: each GPU holds half the kernels, and they
# communicate only in certain layers; section 3.3 sums over "n adjacent kernel maps"). "all":
# across both towers' maps, as Caffe's LRN layer (it ignores groups) and so bvlc_alexnet and
# CaffeNet; also what this model did before the option existed.
LRNScope = Literal["tower", "all"]
LRN_SCOPES: tuple[str, ...] = ("tower", "all")


def _pool_output(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class AlexNet(nn.Module):
    """AlexNet with the paper's options and the ablations of sections 3.1-3.4 and 4.2.

    Args:
        num_classes: size of the last layer (1000 for ILSVRC).
        shape: widths and geometry (``PAPER_SHAPE`` or ``SMALL_SHAPE``).
        in_channels: 3 for RGB, 1 for grayscale data.
        image_size: input side; defaults to the shape's own.
        activation: ``relu`` (section 3.1) or ``tanh`` (the Figure 1 comparison).
        lrn: local response normalisation after conv1 and conv2 (section 3.3).
        lrn_convention: ``code`` (alpha/n, the authors' code and PyTorch) or ``paper``.
        lrn_k: the additive constant (2 in the paper, 1 in Caffe).
        lrn_order: ``norm-pool`` (the paper: conv, ReLU, LRN, pool) or ``pool-norm`` (CaffeNet:
            conv, ReLU, pool, LRN) in layers 1 and 2.
        lrn_scope: ``all`` (windows cross the tower boundary, as Caffe) or ``tower`` (each tower
            normalises its own maps, as the paper's GPUs); no effect with ``towers=1``. The
            registry's ``alexnet`` defaults to ``tower`` (see ``models.LEGACY_DEFAULTS``).
        pooling: ``overlapping`` 3x3 stride 2 (section 3.4) or ``non-overlapping`` 2x2 stride 2.
        towers: 2 (grouped conv2/4/5, section 3.2) or 1 (one tower with half the kernels in
            conv1-conv4; conv5 keeps its width, as the paper's footnote 2 describes).
        dropout: drop probability in fc6/fc7 (section 4.2; 0 switches it off).
        init: ``paper``, ``caffe``, ``kaiming`` or ``torchvision`` (see ``models.init``).
        widths: the five convolution widths instead of the shape's (for width ablations).
        fc_width: the width of fc6/fc7 instead of the shape's.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        shape: AlexNetShape = PAPER_SHAPE,
        *,
        in_channels: int = 3,
        image_size: int | None = None,
        activation: Activation = "relu",
        lrn: bool = True,
        lrn_convention: Literal["code", "paper"] = "code",
        lrn_k: float = 2.0,
        lrn_order: LRNOrder = "norm-pool",
        lrn_scope: LRNScope = "all",
        pooling: Pooling = "overlapping",
        towers: int = 2,
        dropout: float = 0.5,
        init: str = "paper",
        widths: Sequence[int] | None = None,
        fc_width: int | None = None,
    ) -> None:
        super().__init__()
        shape = _resolved_shape(shape, widths, fc_width, towers)
        _check_options(activation, pooling, lrn_order, lrn_scope, dropout)
        size = image_size or shape.image_size
        # Section 3.4: "s = 2 and z = 3"; the ablation uses s = z = 2.
        pool = (3, 2) if pooling == "overlapping" else (2, 2)
        self.lrn_order, self.lrn_scope = lrn_order, lrn_scope
        # Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75, applied after the ReLU.
        # lrn_scope="tower": one window per tower's maps (groups), as on the paper's GPUs.
        lrn_groups = towers if lrn_scope == "tower" else 1
        norm = partial(LocalResponseNorm, 5, 1e-4, 0.75, lrn_k, lrn_convention, groups=lrn_groups) if lrn else nn.Identity
        self.features = _features(shape, in_channels, towers, partial(_activation, activation), norm, lrn_order, pool)
        side = _pool_output((size + 2 * shape.conv1_padding - shape.conv1_kernel) // shape.conv1_stride + 1, *pool)
        side = _pool_output(_pool_output(side, *pool), *pool)
        if side < 1:
            raise ValueError(f"image_size {size} is too small for this network")
        self.feature_side = side
        self.classifier = _classifier(shape.widths[4] * side * side, shape.fc_width, num_classes, dropout,
                                      partial(_activation, activation))  # fmt: skip
        initialize(self.layers_by_role(), init)

    def layers_by_role(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """The weight layers keyed by their name in the paper (conv1 .. fc8)."""
        f, c = self.features, self.classifier
        return {
            "conv1": f.conv1, "conv2": f.conv2, "conv3": f.conv3, "conv4": f.conv4, "conv5": f.conv5,
            "fc6": c.fc6, "fc7": c.fc7, "fc8": c.fc8,
        }  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The activations of fc7 (the "last hidden layer" of section 6.1, Figure 4)."""
        x = torch.flatten(self.features(x), 1)
        return self.classifier[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _resolved_shape(shape: AlexNetShape, widths: Sequence[int] | None, fc_width: int | None, towers: int) -> AlexNetShape:
    """``shape`` with the widths and fc width asked for; one tower has half the kernels in conv1-conv4."""
    if widths is not None:
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or any(w < 2 or w % 2 for w in widths):
            raise ValueError(f"widths must be 5 even numbers >= 2 (two towers), got {widths}")
        shape = replace(shape, widths=widths)
    if fc_width is not None:
        if fc_width < 1:
            raise ValueError(f"fc_width must be >= 1, got {fc_width}")
        shape = replace(shape, fc_width=int(fc_width))
    if towers not in (1, 2):
        raise ValueError(f"towers must be 1 or 2, got {towers!r}")
    if towers == 1:
        w = shape.widths
        shape = replace(shape, widths=(w[0] // 2, w[1] // 2, w[2] // 2, w[3] // 2, w[4]))
    return shape


def _check_options(activation: str, pooling: str, lrn_order: str, lrn_scope: str, dropout: float) -> None:
    if activation not in ("relu", "tanh"):
        raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
    if pooling not in ("overlapping", "non-overlapping"):
        raise ValueError(f"pooling must be 'overlapping' or 'non-overlapping', got {pooling!r}")
    if lrn_order not in LRN_ORDERS:
        raise ValueError(f"lrn_order must be one of {', '.join(LRN_ORDERS)}, got {lrn_order!r}")
    if lrn_scope not in LRN_SCOPES:
        raise ValueError(f"lrn_scope must be one of {', '.join(LRN_SCOPES)}, got {lrn_scope!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _activation(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "relu" else nn.Tanh()


def _features(
    shape: AlexNetShape, in_channels: int, groups: int, act: Callable[[], nn.Module], norm: Callable[[], nn.Module],
    lrn_order: str, pool: tuple[int, int],
) -> nn.Sequential:
    """conv1 .. pool5, named as in the paper."""
    c1, c2, c3, c4, c5 = shape.widths
    k2 = shape.conv2_kernel

    def normalise_and_pool(i: int) -> list[tuple[str, nn.Module]]:
        # Both orders keep the names norm{i}/pool{i}: the state_dict is the same either way.
        pair = [(f"norm{i}", norm()), (f"pool{i}", nn.MaxPool2d(*pool))]
        return pair if lrn_order == "norm-pool" else pair[::-1]

    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, c1, shape.conv1_kernel, shape.conv1_stride, shape.conv1_padding)),
                ("act1", act()),
                *normalise_and_pool(1),
                # Section 3.2: conv2, conv4, conv5 see only the kernel maps on their own GPU.
                ("conv2", nn.Conv2d(c1, c2, k2, padding=k2 // 2, groups=groups)),
                ("act2", act()),
                *normalise_and_pool(2),
                ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),  # "the GPUs communicate" here
                ("act3", act()),
                ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=groups)),
                ("act4", act()),
                ("conv5", nn.Conv2d(c4, c5, 3, padding=1, groups=groups)),
                ("act5", act()),
                ("pool5", nn.MaxPool2d(*pool)),
            ]
        )
    )


def _classifier(inputs: int, width: int, num_classes: int, dropout: float, act: Callable[[], nn.Module]) -> nn.Sequential:
    """fc6 .. fc8, dropout on the outputs of fc6 and fc7: section 4.2 drops "the output of each
    hidden neuron" of "the first two fully-connected layers" (as Caffe's bvlc_alexnet; torchvision
    drops fc6's input and fc6's output instead)."""
    return nn.Sequential(
        OrderedDict(
            fc6=nn.Linear(inputs, width),
            act6=act(),
            drop6=nn.Dropout(dropout),
            fc7=nn.Linear(width, width),
            act7=act(),
            drop7=nn.Dropout(dropout),
            fc8=nn.Linear(width, num_classes),
        )
    )
