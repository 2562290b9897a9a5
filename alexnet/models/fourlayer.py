"""The paper's four-layer CIFAR-10 network (section 3.1, Figure 1).

Figure 1 compares "a four-layer convolutional neural network with ReLUs" and "an equivalent
network with tanh neurons" on CIFAR-10. The paper does not print the layers; the authors'
cuda-convnet ships the net they used for such CIFAR-10 runs (``layers-18pct.cfg``): three 5x5
convolutions of 32, 32 and 64 kernels, each followed by a 3x3 stride-2 pool (max, then
average, average), and one fully connected softmax layer: four weight layers. This module
builds that topology for any input side and channel count (28 px Fashion-MNIST, 32 px CIFAR).

"No regularization of any kind was employed" in Figure 1, so ``dropout`` defaults to 0 and LRN
(which cuda-convnet's file has after the first two pools) to off; both stay available so the
net also serves section 3.3's CIFAR-10 LRN comparison.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from alexnet.models.alexnet import Activation, _pool_output
from alexnet.models.init import initialize
from alexnet.models.lrn import LocalResponseNorm

# layers-18pct.cfg: 32, 32, 64 kernels of 5x5 ("padding=2" keeps the side), pools 3/2.
WIDTHS = (32, 32, 64)
KERNEL = 5
POOL_KERNEL, POOL_STRIDE = 3, 2


class FourLayerNet(nn.Module):
    """Three convolutions and one softmax layer (Figure 1's four-layer net).

    Args:
        num_classes: outputs (10 for CIFAR-10 and Fashion-MNIST).
        in_channels: 3 for RGB, 1 for grayscale.
        image_size: input side (default 32, CIFAR-10's).
        activation: ``relu`` or ``tanh``: the comparison of Figure 1.
        lrn: local response normalisation after the first two pools (section 3.3's variant).
        dropout: drop probability before the softmax layer (0: Figure 1 used none).
        init: weight init scheme (see ``models.init``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        image_size: int = 32,
        activation: Activation = "relu",
        lrn: bool = False,
        dropout: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        c1, c2, c3 = WIDTHS

        def act() -> nn.Module:
            return nn.ReLU(inplace=True) if activation == "relu" else nn.Tanh()

        def norm() -> nn.Module:
            # The AlexNet constants of section 3.3 (k = 2, n = 5, alpha = 1e-4, beta = 0.75).
            return LocalResponseNorm(5, 1e-4, 0.75, 2.0, "code") if lrn else nn.Identity()

        pad = KERNEL // 2
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, c1, KERNEL, padding=pad),
                act1=act(),
                pool1=nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE),
                norm1=norm(),
                conv2=nn.Conv2d(c1, c2, KERNEL, padding=pad),
                act2=act(),
                pool2=nn.AvgPool2d(POOL_KERNEL, POOL_STRIDE),
                norm2=norm(),
                conv3=nn.Conv2d(c2, c3, KERNEL, padding=pad),
                act3=act(),
                pool3=nn.AvgPool2d(POOL_KERNEL, POOL_STRIDE),
            )
        )
        side = image_size
        for _ in range(3):
            side = _pool_output(side, POOL_KERNEL, POOL_STRIDE)
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for this network")
        self.classifier = nn.Sequential(
            OrderedDict(drop=nn.Dropout(dropout), fc4=nn.Linear(c3 * side * side, num_classes))
        )
        initialize(self.layers_by_role(), init)

    def layers_by_role(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """The weight layers in order (``fc4`` is the output layer)."""
        f = self.features
        return {"conv1": f.conv1, "conv2": f.conv2, "conv3": f.conv3, "fc4": self.classifier.fc4}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the last pool (the input of the softmax layer)."""
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))
