"""torchvision's single-tower AlexNet ("One weird trick", Krizhevsky 2014).

Built by torchvision itself (never with downloaded weights) so that the state_dict keys,
shapes and forward pass are torchvision's by construction: a torchvision ``alexnet`` weights
file loads into ``alexnet-owt`` and gives the same logits.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import AlexNet as TorchvisionAlexNet

from alexnet.models.init import initialize

# The input convention torchvision's ImageNet weights were trained with (its transforms'
# ``ImageClassification``): mean/std in 0-255 units, short side 256, centre 224 crop, RGB.
TORCHVISION_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCHVISION_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
TORCHVISION_IMAGE_SIZE, TORCHVISION_CROP = 256, 224


class AlexNetOWT(TorchvisionAlexNet):
    """torchvision's AlexNet (64-192-384-256-256, no LRN, no groups) with our init options."""

    def __init__(
        self, num_classes: int = 1000, *, in_channels: int = 3, dropout: float = 0.5, init: str = "torchvision"
    ) -> None:
        super().__init__(num_classes=num_classes, dropout=dropout)
        if in_channels != 3:
            self.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
        initialize(self.layers_by_role(), init)

    def layers_by_role(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """The weight layers keyed by their name in the paper (conv1 .. fc8)."""
        f, c = self.features, self.classifier
        return {
            "conv1": f[0], "conv2": f[3], "conv3": f[6], "conv4": f[8], "conv5": f[10],
            "fc6": c[1], "fc7": c[4], "fc8": c[6],
        }  # fmt: skip

    def forward_features(self, x):
        """The activations of fc7 (input of the last layer)."""
        x = self.avgpool(self.features(x)).flatten(1)
        return self.classifier[:-1](x)
