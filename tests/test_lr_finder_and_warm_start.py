"""Training on your own images: the LR range test, the chance-level warning, and training from
pretrained weights (--init-from, --freeze).

Real computations on tiny problems: a narrow alexnet-small on a Fashion-MNIST subset for the
range test and the warning, tiny synthetic runs through the real CLI for --init-from.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch

from alexnet import models
from alexnet.cli import main
from alexnet.training import warmstart
from alexnet.training.health import ChanceWatch
from alexnet.training.loop import train_step
from alexnet.training.lr_finder import (
    CURVE_CSV,
    CURVE_JSON,
    RangeTestConfig,
    find_lr,
    geometric_lrs,
    range_test,
    smooth,
    step_scaled_lr,
    suggest_lr,
)
from tests.helpers.cli import assert_one_line_error, cli_main, needs_fashion

TINY = {"widths": [8, 16, 24, 24, 16], "fc_width": 64, "dropout": 0.0, "init": "kaiming"}
SYN1 = "synthetic:classes=4,size=28,train=64,val=16,channels=1"
TINY_FLAGS = ["--widths", "8,16,24,24,16", "--fc-width", "32", "--batch-size", "16", "--epochs", "1", "--no-progress",
              "--precision", "fp32", "--workers", "0"]  # fmt: skip


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, stderr)."""
    code, _, err = cli_main(capsys, *args)
    return code, err


# ---------------------------------------------------------------- range test: the pure parts


def test_geometric_lrs_and_smoothing() -> None:
    lrs = geometric_lrs(RangeTestConfig(min_lr=1e-3, max_lr=1.0, steps=4))
    assert lrs == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: no start-up dip
    assert suggest_lr([0.01, 0.1, 1.0], [2.0, 1.0, math.nan], safety=10) == (0.1, pytest.approx(0.01))
    assert suggest_lr([0.01, 0.1, 1.0], [2.0, 1.0, math.nan], safety=10, cap=0.005)[1] == 0.005


def test_step_scaled_default_lr() -> None:
    assert step_scaled_lr(0.1, 1872, 1872) == 0.1 and step_scaled_lr(0.1, 1872, 5000) == 0.1  # the demo's length
    assert step_scaled_lr(0.1, 0, 10) == 0.1  # recipes without a reference (paper) are never scaled
    assert step_scaled_lr(0.1, 1872, 468) == pytest.approx(0.05)  # a quarter of the steps: half the rate


def test_range_test_stops_when_the_loss_blows_up() -> None:
    # A loss that falls until lr 0.1 and explodes beyond it, as real curves do.
    result = range_test(lambda lr: 1.0 + (lr / 0.1) ** 4 - 0.5 * min(lr, 0.1) / 0.1, RangeTestConfig(beta=0.0))
    assert result.diverged and result.lrs[-1] < RangeTestConfig().max_lr
    assert 0.03 < result.min_loss_lr < 0.1 and result.suggested_lr == result.min_loss_lr


# ---------------------------------------------------------------- range test on a tiny real problem


@pytest.fixture(scope="module")
def fashion_subset() -> tuple[torch.Tensor, torch.Tensor]:
    """512 Fashion-MNIST training images, standardised, and their labels."""
    from alexnet.data.fashion_mnist import fashion_mnist

    images, labels = fashion_mnist().splits["train"]
    x = images[:512].float()
    return (x - x.mean()) / x.std(), labels[:512]


def _batches(data: tuple[torch.Tensor, torch.Tensor], batch: int = 64):
    x, y = data
    while True:
        for i in range(0, len(y), batch):
            yield x[i : i + batch], y[i : i + batch]


def _sgd(model: torch.nn.Module, lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)


def _step(model, optimizer, x, y):
    return train_step(model, optimizer, x, y, "fp32")


def _train_losses(model: torch.nn.Module, data, lr: float, steps: int) -> list[float]:
    trial = __import__("copy").deepcopy(model)
    optimizer, batches = _sgd(trial, lr), _batches(data)
    return [float(_step(trial, optimizer, *next(batches))[0].detach()) for _ in range(steps)]


@needs_fashion
def test_range_test_picks_an_lr_inside_the_stable_region(fashion_subset) -> None:
    torch.manual_seed(0)
    model = models.create("alexnet-small", 10, in_channels=1, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = find_lr(model, _sgd, _batches(fashion_subset), _step)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model is untouched
    assert torch.equal(rng, torch.get_rng_state())  # and so is the RNG of the run that follows
    # The short sweep at constant rates (harsher than the run's warm-up): stable = finite and the
    # loss of the last 10 of 30 steps below that of the first 5.
    sweep = {lr: _train_losses(model, fashion_subset, lr, 30) for lr in (1e-3, 1e-2, 3e-2, 1e-1, 1.0)}
    stable = [lr for lr, l in sweep.items() if math.isfinite(sum(l)) and sum(l[-10:]) / 10 < sum(l[:5]) / 5]
    unstable = [lr for lr in sweep if lr not in stable and lr > max(stable, default=0)]
    assert stable and unstable, sweep  # the sweep does find both regions
    chosen = result.suggested_lr
    assert min(stable) <= chosen <= max(stable) and chosen < min(unstable), (chosen, stable, unstable)
    # The chance-level watch stays silent on a healthy run of that sweep (checked late: a tiny
    # net needs a few steps to leave chance).
    healthy = sweep[3e-2]
    assert sum(healthy[-10:]) / 10 < 0.9 * math.log(10)
    watch = ChanceWatch(num_classes=10, total_steps=30, lr=3e-2, fraction=0.8)
    assert not any(watch.update(step, torch.tensor(loss)) for step, loss in enumerate(healthy, 1))


# ---------------------------------------------------------------- chance-level warning


def test_chance_watch_fires_once_and_only_at_chance() -> None:
    at_chance = ChanceWatch(num_classes=10, total_steps=100, lr=0.1)
    fired = [at_chance.update(step, torch.tensor(math.log(10) + 0.01)) for step in range(1, 101)]
    messages = [m for m in fired if m]
    assert len(messages) == 1 and "--lr auto" in messages[0] and "chance" in messages[0]
    assert fired.index(messages[0]) == at_chance.check_step - 1  # at 30% of the run, not before
    learning = ChanceWatch(num_classes=10, total_steps=100, lr=0.1)
    assert not any(learning.update(step, torch.tensor(2.3 * 0.99**step)) for step in range(1, 101))


def test_trainer_warns_when_forced_to_diverge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", SYN1, *TINY_FLAGS, "--epochs", "3", "--lr", "0.5", "--out", str(tmp_path / "bad")])
    out = capsys.readouterr()
    assert code == 0 and (out.out + out.err).count("still at chance level") == 1, out


# ---------------------------------------------------------------- --lr auto through the trainer


def test_lr_auto_in_the_trainer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "auto"
    assert main(["train", "--data", SYN1, *TINY_FLAGS, "--lr", "auto", "--out", str(run)]) == 0
    assert (run / CURVE_JSON).exists() and (run / CURVE_CSV).read_text().startswith("lr,loss,smoothed_loss")
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    chosen = ckpt["config"]["recipe"]["lr"]  # the concrete rate is saved: --resume needs no second test
    assert 0 < chosen <= 0.1 and ckpt["config"]["lr_policy"] == "auto"
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(chosen)
    assert "--lr auto: range test" in capsys.readouterr().out


# ---------------------------------------------------------------- --init-from


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny grayscale alexnet-small run (4 classes) to start from."""
    run = tmp_path_factory.mktemp("source") / "run"
    with contextlib.redirect_stdout(None):
        assert main(["train", "--data", SYN1, *TINY_FLAGS, "--out", str(run)]) == 0  # the default lr
    return run


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def _assert_frozen(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], head: str) -> None:
    frozen = [k for k in before if not k.startswith(head)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), "frozen weights changed"


def test_linear_probe_from_a_checkpoint_keeps_frozen_weights_bit_identical(source_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "probe"
    other = "synthetic:classes=3,size=28,train=64,val=16,channels=1,seed=7"  # new data, 3 classes
    assert main(["train", "--data", other, "--batch-size", "16", "--epochs", "2", "--no-progress", "--workers", "0",
                 "--precision", "fp32", "--lr", "0.05", "--init-from", str(source_run), "--freeze", "features",
                 "--out", str(run)]) == 0  # fmt: skip
    src, new = _last(source_run), _last(run)
    head = warmstart.head_prefix(models.create("alexnet-small", 3, in_channels=1, **TINY))
    _assert_frozen(src["model"], new["model"], head)
    assert new["model"][head + "weight"].shape[0] == 3  # the last layer was replaced for the new classes
    assert new["model_options"]["widths"] == [8, 16, 24, 24, 16]  # the architecture follows the weights
    assert new["data"]["mean"] == src["data"]["mean"]  # and so does the preprocessing
    assert new["step"] == 8 and new["optimizer"]["state"]  # it trained (fc8 has momentum buffers)
    # the source run used the default learning rate: the small recipe's, scaled to its 4 steps
    assert src["config"]["lr_policy"] == "steps" and src["config"]["recipe"]["lr"] == pytest.approx(0.1 * (4 / 1872) ** 0.5)


def test_finetune_gives_pretrained_layers_a_lower_lr(source_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "finetune"
    other = "synthetic:classes=3,size=28,train=64,val=16,channels=1,seed=7"
    assert main(["train", "--data", other, "--batch-size", "16", "--epochs", "1", "--no-progress", "--workers", "0",
                 "--lr", "0.02", "--init-from", str(source_run), "--init-norm", "data", "--out", str(run)]) == 0  # fmt: skip
    ckpt = _last(run)
    rates = sorted(g["initial_lr"] for g in ckpt["optimizer"]["param_groups"])
    assert rates[0] == pytest.approx(0.002) and rates[-1] == pytest.approx(0.02)
    assert ckpt["data"]["mean"] != _last(source_run)["data"]["mean"]  # --init-norm data: the new data's statistics


def test_torchvision_weights_file(tmp_path: Path) -> None:
    import torchvision

    from alexnet.models.owt import TORCHVISION_MEAN

    weights = tmp_path / "alexnet-owt.pth"  # torchvision's layout, random values (no download)
    torch.save(torchvision.models.alexnet(num_classes=10).state_dict(), weights)
    run = tmp_path / "owt"
    data = "synthetic:classes=3,size=64,train=16,val=8,channels=3"
    assert main(["train", "--data", data, "--batch-size", "8", "--epochs", "1", "--no-progress", "--workers", "0",
                 "--precision", "fp32", "--init-from", str(weights), "--freeze", "features", "--out", str(run)]) == 0  # fmt: skip
    ckpt = _last(run)
    assert ckpt["model_name"] == "alexnet-owt" and ckpt["model"]["classifier.6.weight"].shape[0] == 3
    _assert_frozen(torch.load(weights, weights_only=True), ckpt["model"], "classifier.6.")
    assert ckpt["data"]["mean"] == pytest.approx(list(TORCHVISION_MEAN))  # torchvision's preprocessing


def test_weights_mismatch_is_one_line(source_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tv = tmp_path / "tv.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11), "classifier.6.weight": torch.zeros(10, 4096)}, tv)
    rgb = "synthetic:classes=4,size=28,train=32,val=8,channels=3"
    out = str(tmp_path / "x")
    assert_one_line_error(cli(capsys, "train", "--data", rgb, "--init-from", str(tv), "--model", "alexnet-small",
                              "--out", out), "holds alexnet-owt weights")  # fmt: skip
    # The message names what was given (the run folder), not the last.pt inside it.
    assert_one_line_error(cli(capsys, "train", "--data", rgb, "--init-from", str(source_run), "--model", "fourlayer",
                              "--out", out), f"--init-from {source_run} holds alexnet-small weights")  # fmt: skip
    assert_one_line_error(cli(capsys, "train", "--data", rgb, "--freeze", "features", "--out", out), "needs --init-from")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert_one_line_error(cli(capsys, "train", "--data", rgb, "--init-from", str(garbage), "--out", out), "not a readable")


def test_pretrained_lr_scale_survives_the_schedule() -> None:
    from alexnet.training.recipes import SMALL
    from alexnet.training.schedule import make_scheduler

    model = models.create("alexnet-small", 4, in_channels=1, **TINY)
    optimizer = _sgd(model, 0.1)
    warmstart.scale_pretrained_lr(optimizer, model, 0.1)
    scheduler = make_scheduler(optimizer, SMALL, steps_per_epoch=10)
    head = {id(p) for p in model.layers_by_role()["fc8"].parameters()}
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    for group in optimizer.param_groups:
        is_head = all(id(p) in head for p in group["params"])
        other = next(g for g in optimizer.param_groups if all(id(p) in head for p in g["params"]) != is_head)
        ratio = group["lr"] / other["lr"]
        assert ratio == pytest.approx(10.0 if is_head else 0.1)
