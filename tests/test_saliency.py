"""Occlusion and Grad-CAM against a hand-made net whose answer is known, and against Captum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet import models
from alexnet.errors import UserError
from alexnet.evaluation.saliency import Occlusion, explain, grad_cam, last_conv_layer, occlusion

SIDE = 16


class Halves(nn.Module):
    """Channel 0: the image's left half (right half zero); channel 1: its right half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = torch.zeros_like(x)
        left[..., : SIDE // 2] = 1
        return torch.cat([x * left, x * (1 - left)], 1)


class LeftHalfNet(nn.Module):
    """Class 0's score is the mean of the left half of the image; class 1's is a constant.
    Only the left half can matter for class 0."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        self.features = nn.Sequential(Halves(), conv, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        class0 = 8 * a[:, 0].mean(dim=(1, 2))
        return torch.stack([class0, torch.full_like(class0, 1.0)], 1)


def test_grad_cam_sees_only_the_left_half() -> None:
    net = LeftHalfNet()
    x = torch.rand(1, 1, SIDE, SIDE) + 0.1
    assert last_conv_layer(net) is net.features[2]
    cam = grad_cam(net, x, 0)
    assert cam.shape == (SIDE, SIDE)
    assert (cam[:, : SIDE // 2] > 0).all() and (cam[:, SIDE // 2 :] == 0).all()
    # The weights are the mean gradients: class 0's map is channel 0's activations times 8 / (H * W / 2) * 1/2.
    assert torch.allclose(cam[:, : SIDE // 2], x[0, 0, :, : SIDE // 2] * 8 / (SIDE * SIDE / 2) / 2, atol=1e-6)
    assert (grad_cam(net, x, 1) == 0).all()  # the constant class: no gradient anywhere


def test_occlusion_sees_only_the_left_half() -> None:
    net = LeftHalfNet()
    x = torch.rand(1, 1, SIDE, SIDE) + 0.1
    tiles = occlusion(net, x, 0, Occlusion(4, 4))  # squares never straddle the middle
    assert (tiles[:, : SIDE // 2] > 0).all() and (tiles[:, SIDE // 2 :] == 0).all()
    shape = Occlusion.for_side(SIDE)
    sliding = occlusion(net, x, 0, shape, batch_size=5)  # several batches
    assert (sliding[:, : SIDE // 2] > 0).all()
    assert (sliding[:, SIDE // 2 + shape.window - 1 :] == 0).all()  # only squares wholly on the right cover these
    heat, target, p = explain(net, x, "occlusion")
    assert target == int(net(x).argmax()) and 0 < p < 1 and heat.shape == (SIDE, SIDE)


def test_occlusion_geometry_covers_the_image() -> None:
    for side, expected, starts in ((227, Occlusion(45, 23), 9), (224, Occlusion(45, 23), 9), (28, Occlusion(6, 3), 9)):
        shape = Occlusion.for_side(side)
        assert shape == expected and len(shape.starts(side)) == starts
        assert shape.starts(side)[-1] + shape.window == side  # the last square ends on the edge
    assert Occlusion(4, 2).starts(8) == [0, 2, 4]


def test_explain_bad_method_and_model() -> None:
    with pytest.raises(UserError, match="unknown method"):
        explain(LeftHalfNet(), torch.rand(1, 1, SIDE, SIDE), "lime")
    with pytest.raises(UserError, match="no convolutional part"):
        last_conv_layer(nn.Linear(3, 2))


def test_same_maps_as_captum() -> None:
    captum = pytest.importorskip("captum.attr")
    model = models.create("alexnet-small", 10, in_channels=1).eval()
    x = torch.randn(1, 1, 28, 28)
    target = int(model(x).argmax())
    shape = Occlusion(4, 2)  # Captum's squares: every stride, none clamped to the edge (24 = 12 x 2)
    ours = occlusion(model, x, target, shape)
    theirs = captum.Occlusion(lambda v: model(v).softmax(1)).attribute(
        x, sliding_window_shapes=(1, shape.window, shape.window), strides=(1, shape.stride, shape.stride), baselines=0,
        target=target, perturbations_per_eval=64)  # fmt: skip
    assert ours.abs().max() > 1e-4 and torch.allclose(ours, theirs[0, 0].float(), atol=1e-6)
    layer = last_conv_layer(model)
    ours = grad_cam(model, x, target)
    cam = captum.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    theirs = captum.LayerAttribution.interpolate(cam, (28, 28), "bilinear")
    assert ours.max() > 1e-4 and torch.allclose(ours, theirs[0, 0].detach(), atol=1e-6)
