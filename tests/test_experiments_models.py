"""The models the experiments add: Figure 1's four-layer net and AlexNet minus a middle layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet import models
from alexnet.errors import UserError


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_fourlayer_is_three_convs_and_a_softmax_layer(size: int, channels: int) -> None:
    net = models.create("fourlayer", 10, in_channels=channels, image_size=size)
    weights = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [type(m) for m in weights] == [nn.Conv2d, nn.Conv2d, nn.Conv2d, nn.Linear]
    assert [m.out_channels for m in weights[:3]] == [32, 32, 64]  # cuda-convnet's layers-18pct
    assert net(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_fourlayer_activation_is_the_only_difference() -> None:
    torch.manual_seed(0)
    relu = models.create("fourlayer", 10, in_channels=1, image_size=28, activation="relu")
    torch.manual_seed(0)
    tanh = models.create("fourlayer", 10, in_channels=1, image_size=28, activation="tanh")
    assert all(torch.equal(a, b) for a, b in zip(relu.state_dict().values(), tanh.state_dict().values()))
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 3
    assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 3
    x = torch.randn(4, 1, 28, 28)
    assert not torch.allclose(relu(x), tanh(x))
    with pytest.raises(UserError):
        models.create("fourlayer", 10, activation="sigmoid")


def test_depth_none_is_alexnet_small_and_each_removal_drops_one_conv() -> None:
    torch.manual_seed(0)
    small = models.create("alexnet-small", 10, in_channels=1)
    torch.manual_seed(0)
    full = models.create("alexnet-small-depth", 10, in_channels=1, remove="none")
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), full.state_dict().values()))
    x = torch.rand(2, 1, 28, 28)
    small.eval(), full.eval()
    assert torch.equal(small(x), full(x))
    for layer in ("conv2", "conv3", "conv4"):
        net = models.create("alexnet-small-depth", 10, in_channels=1, remove=layer)
        convs = [name for name, m in net.features.named_children() if isinstance(m, nn.Conv2d)]
        assert convs == [c for c in ("conv1", "conv2", "conv3", "conv4", "conv5") if c != layer]
        assert layer not in net.layers_by_role()
        assert net(x).shape == (2, 10)
    with pytest.raises(UserError, match="remove"):
        models.create("alexnet-small-depth", 10, remove="conv1")
