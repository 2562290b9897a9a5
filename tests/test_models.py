"""Every model: parameter counts, shapes, no NaNs, towers, init, torchvision compatibility."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from alexnet import models
from alexnet.errors import UserError
from tests.helpers.cli import REPO


def test_paper_net_has_exactly_the_papers_parameter_count() -> None:
    assert models.count_parameters(models.create("alexnet")) == 60_965_224


def test_owt_matches_torchvision_parameter_count() -> None:
    assert models.count_parameters(models.create("alexnet-owt")) == 61_100_840


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("alexnet", {}, (2, 3, 227, 227)),
        ("alexnet", {"towers": 1, "pooling": "non-overlapping", "activation": "tanh", "lrn": False}, (2, 3, 227, 227)),
        ("alexnet-owt", {}, (2, 3, 224, 224)),
        ("alexnet-small", {"in_channels": 1}, (2, 1, 28, 28)),
        ("alexnet-small", {"in_channels": 3, "image_size": 32}, (2, 3, 32, 32)),
        ("alexnet-small", {"towers": 1, "pooling": "non-overlapping", "lrn_convention": "paper"}, (2, 3, 28, 28)),
    ],
)
def test_output_shape_and_finite(name: str, options: dict, shape: tuple[int, ...]) -> None:
    model = models.create(name, num_classes=17, **options).eval()
    with torch.no_grad():
        out = model(torch.randn(shape) * 50)
    assert out.shape == (shape[0], 17)
    assert torch.isfinite(out).all()
    features = model.forward_features(torch.randn(shape))
    assert features.ndim == 2 and features.shape[0] == shape[0]


def test_feature_map_is_6x6x256_before_fc6() -> None:
    model = models.create("alexnet")
    assert model.feature_side == 6
    assert model.features(torch.zeros(1, 3, 227, 227)).shape == (1, 256, 6, 6)


def test_single_tower_has_half_kernels_except_conv5() -> None:
    layers = models.create("alexnet", towers=1).layers_by_role()
    assert [layers[f"conv{i}"].out_channels for i in range(1, 6)] == [48, 128, 192, 192, 256]
    assert all(layers[f"conv{i}"].groups == 1 for i in range(1, 6))


def test_widths_and_fc_width_options() -> None:
    model = models.create("alexnet-small", 10, in_channels=1, widths=[32, 128, 192, 192, 128], fc_width=512)
    layers = model.layers_by_role()
    assert [layers[f"conv{i}"].out_channels for i in range(1, 6)] == [32, 128, 192, 192, 128]
    assert layers["fc6"].out_features == 512 and layers["fc7"].in_features == 512
    assert layers["fc6"].in_features == 128 * 2 * 2  # conv5 width x the 2x2 map of 28 px inputs
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(UserError, match="even"):
        models.create("alexnet-small", widths=[32, 65, 96, 96, 64])  # a tower needs whole channels
    with pytest.raises(UserError, match="even"):
        models.create("alexnet-small", widths=[32, 64, 96])


@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5"])
def test_towers_are_isolated_in_grouped_layers(layer: str) -> None:
    conv = models.create("alexnet-small").layers_by_role()[layer]
    half_in, half_out = conv.in_channels // 2, conv.out_channels // 2
    x = torch.randn(2, conv.in_channels, 9, 9, requires_grad=True)
    conv(x)[:, :half_out].sum().backward()  # outputs of tower 1 only
    assert x.grad[:, half_in:].abs().max() == 0  # tower 2's inputs do not reach them
    assert x.grad[:, :half_in].abs().max() > 0


def test_conv3_connects_both_towers() -> None:
    conv = models.create("alexnet-small").layers_by_role()["conv3"]
    x = torch.randn(1, conv.in_channels, 5, 5, requires_grad=True)
    conv(x)[:, :1].sum().backward()
    half = conv.in_channels // 2
    assert x.grad[:, :half].abs().max() > 0 and x.grad[:, half:].abs().max() > 0


def test_paper_init_statistics() -> None:
    layers = models.create("alexnet").layers_by_role()
    for role, layer in layers.items():
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 1e-3, role
        assert w.std().item() == pytest.approx(0.01, rel=0.05), role
        expected_bias = 1.0 if role in {"conv2", "conv4", "conv5", "fc6", "fc7"} else 0.0
        assert torch.all(layer.bias == expected_bias), role


def test_caffe_init_statistics() -> None:
    layers = models.create("alexnet", init="caffe").layers_by_role()
    assert layers["fc6"].weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert layers["conv1"].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(layers["conv2"].bias == 0.1) and torch.all(layers["conv3"].bias == 0)


def test_kaiming_init_statistics() -> None:
    layers = models.create("alexnet", init="kaiming").layers_by_role()
    conv3 = layers["conv3"]
    fan_in = conv3.weight[0].numel()
    assert conv3.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(conv3.bias == 0)


def test_owt_is_torchvision_compatible() -> None:
    reference = torchvision.models.alexnet(weights=None).eval()  # torchvision itself, random weights
    ours = models.create("alexnet-owt").eval()
    ref_state, our_state = reference.state_dict(), ours.state_dict()
    assert list(ref_state) == list(our_state)
    assert all(ref_state[k].shape == our_state[k].shape for k in ref_state)
    ours.load_state_dict(ref_state)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_torchvision_is_imported_only_when_alexnet_owt_is_built() -> None:
    # Commands that never build alexnet-owt (predict, eval, serve) start ~1 s faster without it.
    code = ("import sys; from alexnet import models; assert 'torchvision' not in sys.modules; "
            "opts = models.model_options('alexnet-owt'); assert 'torchvision' in sys.modules; print(opts)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['in_channels',", "'dropout',", "'init']"]  # the options of the lazy builder


def test_lrn_sits_after_relu_and_before_pool() -> None:
    names = list(dict(models.create("alexnet").features.named_children()))
    assert names[:4] == ["conv1", "act1", "norm1", "pool1"] and names[4:8] == ["conv2", "act2", "norm2", "pool2"]


def test_caffenet_order_pools_before_the_lrn_with_the_same_state_dict() -> None:
    torch.manual_seed(0)
    paper = models.create("alexnet-small", 10, in_channels=1)
    caffenet = models.create("alexnet-small", 10, in_channels=1, lrn_order="pool-norm")
    names = list(dict(caffenet.features.named_children()))
    assert names[:4] == ["conv1", "act1", "pool1", "norm1"] and names[4:8] == ["conv2", "act2", "pool2", "norm2"]
    assert caffenet.load_state_dict(paper.state_dict()) is not None  # same keys and shapes
    paper.eval(), caffenet.eval()
    x = torch.randn(2, 1, 28, 28) * 5
    # Max-pooling and LRN do not commute: pooled-then-normalised maps are another function.
    f = caffenet.features
    manual = f.norm1(f.pool1(f.act1(f.conv1(x))))
    torch.testing.assert_close(caffenet.features[:4](x), manual)
    assert not torch.allclose(caffenet(x), paper(x))
    with pytest.raises(UserError, match="lrn_order"):
        models.create("alexnet", lrn_order="sideways")


@pytest.mark.parametrize("order", ["norm-pool", "pool-norm"])
def test_per_tower_lrn_does_not_cross_the_tower_boundary(order: str) -> None:
    # A change in the second tower's first map reaches the first tower's last map through an
    # LRN window with lrn_scope="all" (Caffe), never with "tower" (the paper's GPUs).
    options = {"in_channels": 1, "widths": (8, 16, 16, 16, 8), "fc_width": 32, "lrn_order": order}
    for scope, crosses in (("all", True), ("tower", False)):
        f = models.create("alexnet-small", 10, lrn_scope=scope, **options).features
        for norm, half in ((f.norm1, 4), (f.norm2, 8)):
            a = torch.rand(2, 2 * half, 6, 6) * 20
            b = a.clone()
            b[:, half] += 30.0  # the second tower's first map
            changed = not torch.equal(norm(a)[:, :half], norm(b)[:, :half])
            assert changed == crosses, (scope, norm)
    with pytest.raises(UserError, match="lrn_scope"):
        models.create("alexnet", lrn_scope="gpu")


def test_small_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = models.create("alexnet-small", 10, in_channels=1, dropout=0.0)
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert (model(x).argmax(1) == y).all()


def test_unknown_model_and_option_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown model"):
        models.create("resnet50")
    with pytest.raises(UserError, match="no option"):
        models.create("alexnet", wings=2)
    with pytest.raises(UserError, match="towers"):
        models.create("alexnet", towers=3)


@pytest.mark.parametrize("name", models.available())
def test_canonical_spelling_builds_the_same_network(name: str) -> None:
    """``models.canonical``: every option spelled out (and alexnet-small-depth without a removal
    named alexnet-small) builds the same layers with the same initial weights for a seed."""
    canon_name, options = models.canonical(name, {})
    assert set(options) == set(models.model_options(canon_name)) - {"towers_on"}
    assert models.canonical(canon_name, options) == (canon_name, options)  # a fixed point
    torch.manual_seed(0)
    given = models.create(name, 10)
    torch.manual_seed(0)
    spelled = models.create(canon_name, 10, **options)
    a, b = given.state_dict(), spelled.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _dropped_inputs(net: torch.nn.Module, modules: dict[str, torch.nn.Module], x: torch.Tensor) -> dict[str, tuple]:
    """What each of ``modules`` received and returned in one training-mode forward pass."""
    seen: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda _m, i, o, k=k: seen.update({k: (i[0], o)})) for k, m in modules.items()]
    net.train()
    net(x)
    for h in hooks:
        h.remove()
    return seen


def test_dropout_acts_on_the_outputs_of_fc6_and_fc7() -> None:
    # Section 4.2: "setting to zero the output of each hidden neuron with probability 0.5" in "the
    # first two fully-connected layers": fc6 reads pool5 whole; fc7 and fc8 read dropped activations.
    torch.manual_seed(0)
    net = models.create("alexnet-small", 10, in_channels=1, dropout=0.5)
    c = net.classifier
    seen = _dropped_inputs(net, {"pool5": net.features.pool5, "fc6": c.fc6, "act6": c.act6, "fc7": c.fc7,
                                 "act7": c.act7, "fc8": c.fc8}, torch.randn(8, 1, 28, 28))  # fmt: skip
    assert torch.equal(seen["fc6"][0], torch.flatten(seen["pool5"][1], 1))  # no dropout before fc6
    for layer, source in (("fc7", "act6"), ("fc8", "act7")):
        before, after = seen[source][1], seen[layer][0]
        kept = after != 0
        torch.testing.assert_close(after[kept], 2 * before[kept])  # inverted dropout: kept units x 1/(1-p)
        assert 0.4 < (~kept & (before > 0)).sum() / (before > 0).sum() < 0.6  # about half the active units dropped
