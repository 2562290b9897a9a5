"""Receptive fields from the layer geometry against a brute-force gradient check."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from alexnet import models
from alexnet.errors import UserError
from alexnet.evaluation.receptive import layer_sequence, receptive_fields


def test_paper_net_conv5_sees_163_pixels() -> None:
    fields = receptive_fields(models.create("alexnet"))
    assert list(fields) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert [fields[n].size for n in fields] == [11, 19, 51, 67, 99, 131, 163, 195]
    assert [fields[n].jump for n in fields] == [4, 8, 8, 16, 16, 16, 16, 32]
    # conv5's 13 x 13 units: unit 0 starts 64 px into the padding, the last one ends 64 px past the edge
    f = fields["conv5"]
    assert f.offset == -64 and f.box(0, 0, 227, 227) == (0, 0, 99, 99)
    assert f.box(6, 6, 227, 227) == (32, 32, 195, 195)  # the centre unit sees 163 x 163 px
    assert f.box(12, 12, 227, 227) == (128, 128, 227, 227)


def test_torchvision_layout_and_depth_ablation_are_traced() -> None:
    owt = receptive_fields(models.create("alexnet-owt"))
    assert (owt["conv5"].size, owt["conv5"].jump, owt["conv5"].offset) == (163, 16, -66)  # conv1 padding 2: -2 - 16 - 3 x 16
    depth = receptive_fields(models.create("alexnet-small-depth", 10, remove="conv3", in_channels=1))
    assert "conv3" not in depth and depth["conv4"].size < receptive_fields(models.create("alexnet-small", 10))["conv4"].size


def _linearised(model: nn.Module) -> nn.Module:
    """The same geometry with every dependency visible in the gradient: positive weights,
    no activation or LRN, average instead of max pooling (max passes one pixel's gradient)."""
    net = copy.deepcopy(model).double()
    for name, module in list(net.features.named_children()):
        if isinstance(module, nn.MaxPool2d):
            setattr(net.features, name, nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
        elif not isinstance(module, (nn.Conv2d, nn.AvgPool2d)):
            setattr(net.features, name, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(0.5, 1.0)
    return net


def _support(model: nn.Module, layer: nn.Module, x: torch.Tensor, unit: tuple[int, int, int]) -> torch.Tensor:
    """Input pixels (any channel) whose change changes ``unit`` (channel, y, x) of ``layer``'s output."""
    x = x.clone().requires_grad_(True)
    out: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: out.append(o))
    try:
        model.features(x)
    finally:
        handle.remove()
    c, y, xx = unit
    (grad,) = torch.autograd.grad(out[0][0, c, y, xx], x)
    return grad[0].abs().sum(0) > 0


def _box_mask(box: tuple[int, int, int, int], side: int) -> torch.Tensor:
    mask = torch.zeros(side, side, dtype=torch.bool)
    mask[box[0] : box[2], box[1] : box[3]] = True
    return mask


@pytest.mark.parametrize("name, side", [("alexnet-small", 28), ("fourlayer", 32)])
def test_box_equals_the_pixels_that_change_the_unit(name: str, side: int) -> None:
    model = models.create(name, 10, in_channels=1)
    fields = receptive_fields(model)
    net = _linearised(model)
    layers = dict(layer_sequence(net))
    x = torch.rand(1, 1, side, side, dtype=torch.float64)
    checked = 0
    for layer, f in fields.items():
        with torch.no_grad():
            h = net.features[: list(dict(net.features.named_children())).index(_child(net, layers[layer])) + 1](x)
        rows = h.shape[-1]
        for y, xx in {(0, 0), (rows - 1, 0), (rows // 2, rows // 2), (rows - 1, rows - 1)}:  # corners: border units
            support = _support(net, layers[layer], x, (0, y, xx))
            assert torch.equal(support, _box_mask(f.box(y, xx, side, side), side)), (layer, y, xx)
            checked += 1
    assert checked >= 10


def _child(net: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in net.features.named_children() if m is module)


def test_real_net_depends_on_no_pixel_outside_the_box() -> None:
    model = models.create("alexnet-small", 10, in_channels=1).double().eval()
    fields = receptive_fields(model)
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    for layer in ("conv2", "conv3"):
        module = model.layers_by_role()[layer]
        support = _support(model, module, x, (1, 2, 3))
        assert not (support & ~_box_mask(fields[layer].box(2, 3, 28, 28), 28)).any()


def test_unknown_spatial_module_is_one_clear_error() -> None:
    model = models.create("alexnet-small", 10)
    model.features.add_module("up", nn.Upsample(scale_factor=2))
    with pytest.raises(UserError, match="receptive field is unknown"):
        receptive_fields(model)
