"""The early warnings of a run that is not learning: activation scales at init, dead layers.

The activation report of the paper net is checked against an independent float64 forward pass
written with torch.nn.functional and the LRN formula of section 3.3; the dead-start watch
against a net built to die (a layer whose every unit is switched off) and a healthy one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.training.health import DeadStartWatch, activation_report, output_curvature, stable_lr


def _lrn(a: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """b = a / (k + alpha / n * sum of a^2 over the n adjacent maps of the same group)^beta."""
    out = []
    for part in a.chunk(groups, dim=1):
        sq = F.pad(part.square(), (0, 0, 0, 0, size // 2, size // 2))  # zero maps beyond the edges
        window = sum(sq[:, i : i + part.shape[1]] for i in range(size))
        out.append(part / (k + alpha / size * window) ** beta)
    return torch.cat(out, dim=1)


def _reference_activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ReLU outputs of the paper net in float64, from its weights and the paper's formulas."""
    p = {k: v.double() for k, v in model.state_dict().items()}
    f = "features."
    groups_lrn = 2 if model.lrn_scope == "tower" else 1
    acts = {}
    a = F.relu(F.conv2d(x, p[f + "conv1.weight"], p[f + "conv1.bias"], stride=4))
    acts["conv1"] = a
    a = F.max_pool2d(_lrn(a, 5, 1e-4, 0.75, 2.0, groups_lrn), 3, 2)
    a = F.relu(F.conv2d(a, p[f + "conv2.weight"], p[f + "conv2.bias"], padding=2, groups=2))
    acts["conv2"] = a
    a = F.max_pool2d(_lrn(a, 5, 1e-4, 0.75, 2.0, groups_lrn), 3, 2)
    acts["conv3"] = a = F.relu(F.conv2d(a, p[f + "conv3.weight"], p[f + "conv3.bias"], padding=1))
    acts["conv4"] = a = F.relu(F.conv2d(a, p[f + "conv4.weight"], p[f + "conv4.bias"], padding=1, groups=2))
    acts["conv5"] = a = F.relu(F.conv2d(a, p[f + "conv5.weight"], p[f + "conv5.bias"], padding=1, groups=2))
    a = torch.flatten(F.max_pool2d(a, 3, 2), 1)
    c = "classifier."
    acts["fc6"] = a = F.relu(F.linear(a, p[c + "fc6.weight"], p[c + "fc6.bias"]))
    acts["fc7"] = F.relu(F.linear(a, p[c + "fc7.weight"], p[c + "fc7.bias"]))
    return acts


def test_initial_activation_scales_of_the_paper_net_match_a_float64_forward_pass() -> None:
    torch.manual_seed(0)
    model = models.create("alexnet", 10, init="paper")
    # 0-255 pixels minus a mean image, the paper's input (section 2)
    pixels = torch.rand(2, 3, 227, 227, dtype=torch.float64) * 255
    x = pixels - pixels.mean(0, keepdim=True) + torch.randn(1, 3, 227, 227, dtype=torch.float64) * 30
    report = activation_report(model, x.float())
    reference = _reference_activations(model, x)
    assert list(report) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    for name, a in reference.items():
        units = a.transpose(0, 1).reshape(a.shape[1], -1)
        dead = float((units.amax(dim=1) <= 0).double().mean())
        assert abs(report[name].std - float(a.std())) <= 1e-3 * float(a.std()), name
        assert abs(report[name].rms - float(a.square().mean().sqrt())) <= 1e-3 * float(a.square().mean().sqrt()), name
        assert abs(report[name].dead_fraction - dead) <= 1 / units.shape[0], name
    # The scales the paper's init gives (N(0, 0.01), biases 1): conv1 sees 0-255 inputs and is
    # ~10x larger than conv3; conv4, conv5, fc6 and fc7 sit near their bias of 1.
    assert report["conv1"].rms > 5 * report["conv3"].rms
    for name in ("conv4", "conv5", "fc6", "fc7"):
        assert 0.7 < report[name].rms < 2.5, (name, report[name])


def test_dead_start_watch_names_the_dead_layer_of_a_net_built_to_die() -> None:
    torch.manual_seed(0)
    model = models.create("alexnet-small", 10, in_channels=1, init="kaiming", widths=(8, 16, 24, 24, 16), fc_width=32)
    x = torch.randn(16, 1, 28, 28)
    healthy = activation_report(model, x)
    watch = DeadStartWatch(lr=0.01, init="paper", schedule="plateau")
    assert max(a.dead_fraction for a in healthy.values()) < watch.threshold
    assert watch.verdict(10, healthy) is None and not watch.fired
    with torch.no_grad():
        model.classifier.fc6.bias.fill_(-1e4)  # every fc6 unit below zero for any input: dead
    dying = activation_report(model, x)
    assert dying["fc6"].dead_fraction == 1.0
    message = watch.verdict(10, dying)
    assert message is not None and "fc6 100%" in message and "after 10 steps" in message
    for flag in ("--warmup-epochs", "--init caffe", "--lr 0.001"):
        assert flag in message
    assert watch.verdict(30, dying) is None  # once per run
    # Only fixes that apply: one-cycle warms up already; --init caffe replaces the paper's init.
    other = DeadStartWatch(lr=0.1, init="kaiming", schedule="onecycle").verdict(10, dying)
    assert other is not None and "--warmup-epochs" not in other and "--init" not in other and "--lr 0.01" in other
    assert [s for s in range(1, 200) if DeadStartWatch(lr=0.01).due(s)] == [10, 30, 100]  # the first hundred steps


def test_activation_report_leaves_the_model_as_it_found_it() -> None:
    model = models.create("alexnet-small", 4, in_channels=1, widths=(8, 16, 24, 24, 16), fc_width=32)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    activation_report(model, torch.randn(4, 1, 28, 28))
    assert model.training and all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_run_that_dies_is_told_so_once_within_its_first_hundred_steps(tmp_path, capsys) -> None:
    from alexnet.cli import main

    tiny = ["--data", "synthetic:classes=4,size=28,train=64,val=16,channels=1", "--widths", "8,16,24,24,16",
            "--fc-width", "32", "--batch-size", "16", "--epochs", "3", "--no-progress", "--precision", "fp32",
            "--workers", "0"]  # fmt: skip
    assert main(["train", *tiny, "--lr", "0.5", "--out", str(tmp_path / "dies")]) == 0  # 12 steps, far too large
    said = capsys.readouterr()
    assert (said.out + said.err).count("whole layers output zero") == 1, said
    assert main(["train", *tiny, "--lr", "0.01", "--out", str(tmp_path / "lives")]) == 0
    said = capsys.readouterr()
    assert "whole layers output zero" not in said.out + said.err


def test_output_curvature_is_the_top_eigenvalue_of_the_output_layers_hessian() -> None:
    torch.manual_seed(0)
    model = models.create("alexnet-small", 3, in_channels=1, init="paper", widths=(8, 16, 24, 24, 16), fc_width=6)
    x = torch.randn(5, 1, 28, 28) * 60
    with torch.no_grad():
        h = model.eval().forward_features(x).double()  # eval: no dropout, as output_curvature measures
    model.train()
    fc8 = model.classifier.fc8

    def loss(w: torch.Tensor) -> torch.Tensor:  # mean cross-entropy over the batch's own predictions' labels
        logits = h @ w.view(3, 6).T + fc8.bias.double()
        return torch.logsumexp(logits, 1).mean()  # the labels' term is linear in w: no curvature

    hessian = torch.autograd.functional.hessian(loss, fc8.weight.detach().double().flatten())
    assert output_curvature(model, x, iterations=200) == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-6)
    assert stable_lr(2.0, 0.9) == pytest.approx(1.9)


def test_auto_init_keeps_section_5s_init_only_where_sgd_is_stable_with_it() -> None:
    from alexnet.training.build import settle_init
    from alexnet.training.recipes import get_recipe

    recipe = get_recipe("paper")
    assert recipe.init == "auto"
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28) * 255 - 128  # 0-255 pixels minus a mean, the paper's input scale
    few = models.create("alexnet-small", 10, in_channels=1, init="paper")
    many = models.create("alexnet-small", 1000, in_channels=1, init="paper")
    assert output_curvature(few, x) > 20 * output_curvature(many, x)  # ~||fc7||^2 / classes
    # An lr a quarter of the 1,000-class net's limit: stable there, 5x past the 10-class net's.
    recipe = recipe.with_overrides(lr=stable_lr(output_curvature(many, x), recipe.momentum) / 4)
    init, note = settle_init(recipe, few, x)
    assert init == "caffe" and "--init paper forces it" in note
    init, note = settle_init(recipe, many, x)
    assert init == "paper" and note.startswith("init: section 5's")
    init, note = settle_init(recipe.with_overrides(init="paper"), few, x)  # asked for by name: kept, with a warning
    assert init == "paper" and note.startswith("warning:") and "--init caffe" in note


def test_the_chance_warning_tells_a_slow_start_from_a_divergence() -> None:
    from alexnet.training.health import ChanceWatch

    chance = math.log(10)
    slow = ChanceWatch(num_classes=10, total_steps=100, lr=0.01, alive=True).verdict(chance, 30)
    assert slow is not None and "starting slowly" in slow and "lower --lr" not in slow
    above = ChanceWatch(num_classes=10, total_steps=100, lr=0.01, alive=True).verdict(1.3 * chance, 30)
    assert above is not None and "lower --lr such as 0.001" in above  # alive but above chance: diverging
    dead = ChanceWatch(num_classes=10, total_steps=100, lr=0.01, alive=False).verdict(chance, 30)
    assert dead is not None and "lower --lr such as 0.001" in dead
    # learned first (an epoch well below chance), then back at chance: a collapse, whatever the layers say
    collapsed = ChanceWatch(num_classes=5, total_steps=520, lr=0.0527, alive=True, learned_loss=0.71)
    message = collapsed.verdict(math.log(5), 156)
    assert message is not None and "collapsed" in message and "0.71" in message and "starting slowly" not in message
    assert "lower --lr such as 0.013175" in message
    barely = ChanceWatch(num_classes=10, total_steps=100, lr=0.01, alive=True, learned_loss=0.97 * chance)
    assert "starting slowly" in (barely.verdict(chance, 30) or "")  # never clearly below chance: no collapse
