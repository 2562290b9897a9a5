"""The paper's model parallelism (alexnet.models.towers): the same function and state_dict as
the grouped single-device net, with both "devices" on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alexnet import models
from alexnet.cli import main
from alexnet.errors import UserError
from alexnet.models.towers import TwoTowerAlexNet, parse_devices, split_towers
from tests.helpers.cli import assert_one_line_error

# Narrow layers keep float64 (exact comparisons, slow CPU kernels) cheap.
OPTIONS = {"in_channels": 1, "init": "kaiming", "widths": (8, 16, 16, 16, 8), "fc_width": 32}


def _pair(**options: object) -> tuple[torch.nn.Module, TwoTowerAlexNet]:
    torch.manual_seed(0)
    grouped = models.create("alexnet-small", 10, **(OPTIONS | options))
    towers = split_towers(grouped, "cpu,cpu")
    return grouped.double(), towers.to(torch.float64)


@pytest.mark.parametrize("options", [{}, {"lrn_convention": "paper", "pooling": "non-overlapping"}, {"lrn": False},
                                     {"lrn_order": "pool-norm"}, {"lrn_scope": "tower"},
                                     {"lrn_scope": "tower", "lrn_order": "pool-norm"}])
def test_same_state_dict_and_logits_as_the_grouped_net(options: dict) -> None:
    grouped, towers = _pair(**options)
    sd, tsd = grouped.state_dict(), towers.state_dict()
    assert list(tsd) == list(sd)
    assert all(torch.equal(tsd[k], sd[k]) for k in sd)
    grouped.eval(), towers.eval()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64) * 3
    torch.testing.assert_close(towers(x), grouped(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(towers.forward_features(x), grouped.forward_features(x), rtol=1e-10, atol=1e-10)
    if options.get("lrn_scope") == "tower":  # no halo: each tower runs exactly the grouped net's arithmetic
        f = grouped.features
        h = f.act1(f.conv1(x))
        tower_maps = [t["norm1"](t["act1"](t["conv1"](x))) for t in towers.towers]
        assert towers.towers[0]["norm1"].groups == 1 and f.norm1.groups == 2
        assert torch.equal(torch.cat(tower_maps, 1), f.norm1(h))


@pytest.mark.parametrize(("order", "scope"), [("norm-pool", "all"), ("pool-norm", "all"), ("norm-pool", "tower")])
def test_gradients_match_the_grouped_net_and_load_state_dict_round_trips(order: str, scope: str) -> None:
    grouped, towers = _pair(dropout=0.0, lrn_order=order, lrn_scope=scope)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64) * 3
    y = torch.tensor([1, 7])
    for m in (grouped, towers):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    g_grouped = {n: p.grad for n, p in grouped.named_parameters()}
    # The towers' gradients, concatenated like their weights, are the grouped net's.
    for key, part in towers._pairs():
        merged = torch.cat([t.get_parameter(part).grad for t in towers.towers])
        torch.testing.assert_close(merged, g_grouped[key], rtol=1e-9, atol=1e-12)
    # A grouped net's checkpoint loads into the towers and back, bit for bit.
    other = models.create("alexnet-small", 10, **OPTIONS).double()
    assert not towers.load_state_dict(other.state_dict()).missing_keys
    assert all(torch.equal(a, b) for a, b in zip(towers.state_dict().values(), other.state_dict().values(), strict=True))
    assert grouped.load_state_dict(towers.state_dict()) is not None


def test_registry_option_and_layout() -> None:
    assert "towers_on" in models.model_options("alexnet") and "towers_on" not in models.model_options("alexnet-owt")
    net = models.create("alexnet-small", 10, towers_on="cpu,cpu", **OPTIONS)
    assert isinstance(net, TwoTowerAlexNet)
    net.to("cpu", memory_format=torch.channels_last)
    conv2 = net.towers[0]["conv2"]
    assert conv2.groups == 1 and conv2.in_channels == 4 and conv2.out_channels == 8  # own tower only
    assert net.towers[1]["conv3"].in_channels == 16  # conv3 reads both towers
    assert models.count_parameters(net) == models.count_parameters(models.create("alexnet-small", 10, **OPTIONS))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("spec", ["cpu", "cpu,cpu,cpu", "cpu,", "tpu:0,cpu", "cuda:7,cuda:8"])
def test_bad_device_lists_are_user_errors(spec: str) -> None:
    with pytest.raises(UserError, match="towers_on"):
        parse_devices(spec)


def test_single_tower_cannot_be_split() -> None:
    with pytest.raises(UserError, match="two-tower"):
        models.create("alexnet-small", 10, towers=1, towers_on="cpu,cpu", **OPTIONS)


def test_cli_bad_towers_on_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", "synthetic:classes=4,size=28,train=8,val=8", "--towers-on", "cuda:0",
                 "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    assert_one_line_error((code, capsys.readouterr().err), "towers_on")


def test_each_tower_drops_its_own_fc6_and_fc7_outputs() -> None:
    # Dropout where the single-device net has it (section 4.2: the outputs of fc6 and fc7), applied
    # to each tower's half before it is shared, so both towers' fc7 (and fc8) read the same units.
    torch.manual_seed(0)
    towers = split_towers(models.create("alexnet-small", 10, dropout=0.5, **OPTIONS), "cpu,cpu")
    t0 = towers.towers[0]
    seen: dict[str, tuple] = {}
    hooks = [t0[k].register_forward_hook(lambda _m, i, o, k=k: seen.update({k: (i[0], o)}))
             for k in ("pool5", "fc6", "act6", "drop6", "act7", "drop7")]  # fmt: skip
    towers.train()
    features = towers.forward_features(torch.randn(8, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert seen["fc6"][0].shape[1] == 2 * torch.flatten(seen["pool5"][1], 1).shape[1]  # both towers' pool5, undropped
    for drop, act in (("drop6", "act6"), ("drop7", "act7")):
        assert torch.equal(seen[drop][0], seen[act][1])  # dropout comes right after the activation
    assert torch.equal(features[:, : seen["drop7"][1].shape[1]], seen["drop7"][1])  # fc7's output is returned dropped
