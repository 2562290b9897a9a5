"""GPU checks (marked ``cuda``, skipped without a CUDA device; ``scripts/device-check`` runs
them on a lent GPU): the LRN against the float64 reference on the device, forward/backward in
bf16 and fp32, channels_last, and torch.compile of the paper net."""

from __future__ import annotations

import pytest
import torch

from alexnet import models
from alexnet.models.lrn import LocalResponseNorm, reference_lrn
from alexnet.training.build import make_optimizer
from alexnet.training.loop import train_step
from alexnet.training.recipes import PAPER

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

# Tolerances: fp32 math against a float64 reference; bf16 inputs/outputs (8-bit mantissa).
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2}}
IMPLS = ("auto", "fused", "blocked")


def _activation(dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    # A ReLU output of conv1's size, with values where the paper's alpha matters (a^2 ~ 1e3).
    x = (torch.randn(8, 96, 55, 55, device="cuda", dtype=torch.float64) * 30).relu()
    x = x.to(dtype)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_lrn_matches_the_float64_reference_on_the_gpu(impl: str, dtype: torch.dtype, channels_last: bool) -> None:
    x = _activation(dtype, channels_last)
    m = LocalResponseNorm(impl=impl)
    y = m(x)
    assert y.dtype == dtype and y.device.type == "cuda"
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    x64 = x.detach().double().requires_grad_()
    ref = reference_lrn(x64, 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(y.double(), ref, **TOL[dtype])
    g = torch.randn_like(ref)
    (grad,) = torch.autograd.grad(y, x, g.to(dtype))
    (grad_ref,) = torch.autograd.grad(ref, x64, g)
    torch.testing.assert_close(grad.double(), grad_ref, **TOL[dtype])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_paper_net_trains_on_the_gpu_eager_and_compiled(precision: str) -> None:
    torch.manual_seed(0)
    device = torch.device("cuda")
    x = torch.randn(16, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (16,), device=device)
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = models.create("alexnet", 1000, dropout=0.0).to(device, memory_format=torch.channels_last)
        opt = make_optimizer(model, PAPER, PAPER.lr, device)
        net = torch.compile(model) if compiled else model
        run = [float(train_step(net, opt, x, y, precision)[0]) for _ in range(3)]
        assert all(torch.isfinite(torch.tensor(run)))
        losses.append(run)
    # Compiled and eager: the same losses up to float reassociation (bf16: its rounding).
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]),
                               rtol=1e-3 if precision == "fp32" else 2e-2, atol=0)  # fmt: skip


def test_two_towers_on_one_gpu_and_the_cpu_give_the_grouped_logits() -> None:
    torch.manual_seed(0)
    grouped = models.create("alexnet-small", 10, init="kaiming").eval()
    towers = models.create("alexnet-small", 10, init="kaiming", towers_on="cuda:0,cpu").eval()
    towers.load_state_dict(grouped.state_dict())
    x = torch.randn(4, 3, 28, 28)
    torch.testing.assert_close(towers(x).cpu(), grouped(x), rtol=1e-4, atol=1e-5)
