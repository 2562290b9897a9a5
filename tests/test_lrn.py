"""The fast LRN (alexnet.models.lrn) against direct formulas and torch.nn.LocalResponseNorm."""

from __future__ import annotations

import pytest
import torch

from alexnet.models import lrn_kernels as lrn_mod
from alexnet.models.lrn import LocalResponseNorm, channel_window_sum, reference_lrn

# Large enough alpha that the normalisation visibly changes the result (1e-4 barely does).
ALPHA, BETA, K = 0.05, 0.75, 2.0


def _input(shape: tuple[int, ...], channels_last: bool = False, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    # ReLU-like input (LRN follows a ReLU in AlexNet), scaled so that alpha * sum a^2 ~ k.
    x = (torch.randn(shape, dtype=torch.float64) * 4).relu().to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def _torch_lrn(size: int, convention: str) -> torch.nn.LocalResponseNorm:
    # torch divides alpha by size: the paper's convention is alpha * size in torch's terms.
    return torch.nn.LocalResponseNorm(size, ALPHA if convention == "code" else ALPHA * size, BETA, K)


@pytest.fixture(params=[1 << 18, 37], ids=["one-block", "many-blocks"])
def block_elements(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run with the default block size and with tiny blocks (several blocks, split rows)."""
    monkeypatch.setattr(lrn_mod, "CPU_BLOCK_ELEMENTS", request.param)
    return request.param


@pytest.mark.parametrize("convention", ["code", "paper"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_forward_and_backward_match_torch(block_elements: int, convention: str, size: int, channels_last: bool) -> None:
    x = _input((3, 7, 5, 6), channels_last)
    ours = LocalResponseNorm(size, ALPHA, BETA, K, convention)
    y = ours(x)
    expected = _torch_lrn(size, convention)(x)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, reference_lrn(x.detach(), size, ALPHA, BETA, K, convention), rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    g = torch.randn_like(y)
    (ours_grad,) = torch.autograd.grad(y, x, g)
    (torch_grad,) = torch.autograd.grad(expected, x, g)
    torch.testing.assert_close(ours_grad, torch_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 6, 17), (2, 4, 3, 5, 2), (4, 10)], ids=["3d", "5d", "2d"])
def test_other_ranks(block_elements: int, shape: tuple[int, ...]) -> None:
    x = _input(shape)
    y = LocalResponseNorm(5, ALPHA, BETA, K)(x)
    torch.testing.assert_close(y, reference_lrn(x.detach(), 5, ALPHA, BETA, K), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [4, 5])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_gradcheck_float64(block_elements: int, size: int, channels_last: bool) -> None:
    x = _input((2, 6, 3, 4), channels_last)
    assert torch.autograd.gradcheck(LocalResponseNorm(size, ALPHA, BETA, K), (x,))


@pytest.mark.parametrize("beta", [0.5, 1.0, 0.6])
def test_other_betas(beta: float) -> None:
    x = _input((2, 6, 3, 4))
    ours = LocalResponseNorm(5, ALPHA, beta, K)
    torch.testing.assert_close(ours(x), torch.nn.LocalResponseNorm(5, ALPHA, beta, K)(x), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (x,))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_float32_backward_matches_torch_autograd(channels_last: bool) -> None:
    x = _input((2, 96, 9, 9), channels_last, torch.float32)
    ours, ref = LocalResponseNorm(5, 1e-4, BETA, K), torch.nn.LocalResponseNorm(5, 1e-4, BETA, K)
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad(y, x, g)[0], torch.autograd.grad(y_ref, x, g)[0], rtol=1e-5, atol=1e-6
    )


def test_channels_last_equals_contiguous(block_elements: int) -> None:
    x = _input((3, 20, 7, 9), dtype=torch.float32)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    m = LocalResponseNorm(5, ALPHA, BETA, K)
    y, y_cl = m(x), m(x_cl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and not y_cl.is_contiguous()
    torch.testing.assert_close(y_cl, y, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad(y_cl, x_cl, g)[0], torch.autograd.grad(y, x, g)[0], rtol=1e-6, atol=1e-6
    )


def test_non_contiguous_input() -> None:
    x = _input((3, 8, 6, 10))[:, :, :, ::2]  # neither NCHW- nor NHWC-contiguous
    torch.testing.assert_close(
        LocalResponseNorm(5, ALPHA, BETA, K)(x), _torch_lrn(5, "code")(x), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_bfloat16_in_bfloat16_out(channels_last: bool) -> None:
    x32 = _input((2, 16, 9, 9), channels_last, torch.float32)
    xb = x32.detach().to(torch.bfloat16).requires_grad_()
    m = LocalResponseNorm(5, ALPHA, BETA, K)
    yb, y32 = m(xb), m(x32)
    assert yb.dtype == torch.bfloat16
    assert yb.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Same answer up to bf16 rounding (of the input and of the output): relative 2^-8 each.
    torch.testing.assert_close(yb.float(), y32, rtol=2e-2, atol=1e-2)
    g = torch.randn_like(y32)
    (gb,) = torch.autograd.grad(yb, xb, g.to(torch.bfloat16))
    (g32,) = torch.autograd.grad(y32, x32, g)
    assert gb.dtype == torch.bfloat16
    torch.testing.assert_close(gb.float(), g32, rtol=3e-2, atol=3e-2)


def test_bfloat16_keeps_the_small_alpha_term() -> None:
    # With the paper's alpha the normalisation changes values by ~0.5%, about bf16's resolution:
    # a bf16 denominator would round it away entirely. Ours must match the fp32 result better
    # than "no normalisation, just k^-beta" does.
    x = (torch.rand(4, 32, 8, 8) * 30).to(torch.bfloat16)
    m = LocalResponseNorm()
    exact = m(x.float())
    constant = x.float() * 2.0**-0.75
    ours = m(x).float()
    assert (ours - exact).abs().mean() < 0.5 * (constant - exact).abs().mean()


def test_retain_graph_double_backward_gives_same_grads() -> None:
    x = _input((2, 10, 4, 4), True, torch.float32)
    y = LocalResponseNorm(5, ALPHA, BETA, K)(x)
    g = torch.randn_like(y)
    y.backward(g, retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    y.backward(g)
    torch.testing.assert_close(x.grad, first, rtol=0, atol=0)


def test_inference_mode_and_no_grad() -> None:
    x = _input((2, 10, 4, 4)).detach()
    m = LocalResponseNorm(5, ALPHA, BETA, K)
    with torch.inference_mode():
        y = m(x)
    torch.testing.assert_close(y, _torch_lrn(5, "code")(x))


def test_channel_window_sum() -> None:
    t = torch.arange(1.0, 7.0).view(1, 6, 1)
    torch.testing.assert_close(channel_window_sum(t, 2, 2).flatten(), torch.tensor([6.0, 10, 15, 20, 18, 15]))
    torch.testing.assert_close(channel_window_sum(t, 0, 1).flatten(), torch.tensor([3.0, 5, 7, 9, 11, 6]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        LocalResponseNorm(0)
    with pytest.raises(ValueError, match="convention"):
        LocalResponseNorm(convention="caffe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N, C"):
        LocalResponseNorm()(torch.ones(5))


@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (2, 0, 3, 3), (2, 3, 0, 4)])
def test_empty_input(shape: tuple[int, ...]) -> None:
    x = torch.zeros(shape, requires_grad=True)
    y = LocalResponseNorm()(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_nan_stays_in_its_image(block_elements: int, channels_last: bool) -> None:
    x = _input((3, 8, 4, 5), channels_last).detach()
    x[1, 3, 2, 2] = float("nan")
    x.requires_grad_()
    y = LocalResponseNorm(5, ALPHA, BETA, K)(x)
    y.backward(torch.ones_like(y))
    clean = x.detach()[[0, 2]].requires_grad_()
    y_ref = _torch_lrn(5, "code")(clean)
    y_ref.backward(torch.ones_like(y_ref))
    torch.testing.assert_close(y.detach()[[0, 2]], y_ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad[[0, 2]], clean.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_many_blocks_and_any_thread_count_give_identical_results(channels_last: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _input((4, 12, 5, 5), channels_last, torch.float32)
    m = LocalResponseNorm(5, ALPHA, BETA, K)
    y = m(x)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    monkeypatch.setattr(lrn_mod, "CPU_BLOCK_ELEMENTS", 64)  # many blocks, some of them partial
    assert len(lrn_mod._Layout(lrn_mod._channel_view(x.detach(), channels_last), 5).blocks) > 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        y1 = m(x)
        (g1,) = torch.autograd.grad(y1, x, torch.ones_like(y1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y, y1) and torch.equal(g, g1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_reused_workspaces_give_fresh_results(channels_last: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU workspaces are reused across calls: a NaN in an earlier call, a different geometry
    in between and a partial last block must not change the next call's output or gradient."""
    monkeypatch.setattr(lrn_mod, "CPU_BLOCK_ELEMENTS", 64)  # many blocks, some of them partial
    m = LocalResponseNorm(5, ALPHA, BETA, K)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_()
        y = m(x)
        (g,) = torch.autograd.grad(y, x, torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
        return y, g

    x = _input((5, 12, 7, 3), channels_last, torch.float32)
    lrn_mod._CACHE.__dict__.clear()
    fresh = run(x)
    poisoned = x.detach().clone()
    poisoned[:, :, 0] = float("inf")
    poisoned[:, :, 1] = float("nan")
    run(poisoned)
    run(_input((2, 7, 4, 9), channels_last, torch.float32))  # another geometry in between
    assert len(lrn_mod._CACHE.workspaces) >= 2
    again = run(x)
    assert torch.equal(fresh[0], again[0]) and torch.equal(fresh[1], again[1])


# -- the implementations: custom op (default on CPU), the former autograd.Function, fused ------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_custom_op_is_bit_identical_to_the_former_function(dtype: torch.dtype, channels_last: bool) -> None:
    x = _input((3, 20, 7, 9), channels_last, torch.float32).detach().to(dtype).requires_grad_()
    g = torch.randn(x.shape).to(dtype)
    outputs = {}
    for impl in ("blocked", "function"):
        y = LocalResponseNorm(5, ALPHA, BETA, K, impl=impl)(x)
        outputs[impl] = (y, *torch.autograd.grad(y, x, g))
    assert LocalResponseNorm(5, ALPHA, BETA, K).impl == "auto"  # auto = blocked on CPU
    for a, b in zip(outputs["blocked"], outputs["function"], strict=True):
        assert torch.equal(a, b) and a.stride() == b.stride()


def test_custom_op_registration_passes_opcheck() -> None:
    # Schema, fake (meta) implementation and autograd registration, as torch.compile relies on
    # them (opcheck's AOT-dispatch check is slow; test_compile.py traces the op for real).
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    x = _input((2, 6, 3, 4), True, torch.float32)
    torch.library.opcheck(lrn_mod.lrn_op, (x, 5, ALPHA, BETA, K), test_utils=checks)
    torch.library.opcheck(lrn_mod.lrn_backward_op, (x.detach(), torch.randn_like(x), 5, ALPHA, BETA, K), test_utils=checks)


@pytest.mark.parametrize("convention", ["code", "paper"])
@pytest.mark.parametrize("size", [1, 4, 5])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fused_formulation_matches_the_reference(convention: str, size: int, channels_last: bool) -> None:
    x = _input((2, 7, 5, 6), channels_last)
    fused = LocalResponseNorm(size, ALPHA, BETA, K, convention, impl="fused")
    y = fused(x)
    torch.testing.assert_close(y, reference_lrn(x.detach(), size, ALPHA, BETA, K, convention), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    blocked = LocalResponseNorm(size, ALPHA, BETA, K, convention, impl="blocked")
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(blocked(x), x, g)[0],
                               rtol=1e-10, atol=1e-12)  # fmt: skip


def test_fused_bfloat16_in_bfloat16_out() -> None:
    x = (torch.rand(2, 16, 5, 5) * 30).to(torch.bfloat16)
    y = LocalResponseNorm(impl="fused")(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), LocalResponseNorm()(x.float()), rtol=1e-2, atol=1e-2)


def test_unknown_impl() -> None:
    with pytest.raises(ValueError, match="impl"):
        LocalResponseNorm(impl="triton")  # type: ignore[arg-type]


def test_workspace_made_under_inference_mode_serves_training_calls_too() -> None:
    # The per-thread CPU workspace outlives the call that made it: one first made under
    # torch.inference_mode (serving, eval) must not be an inference tensor that a later
    # training (or ONNX export) call cannot write into.
    lrn = LocalResponseNorm()
    x = torch.randn(2, 8, 5, 5)
    with torch.inference_mode():
        served = lrn(x)
    trained = lrn(x.clone().requires_grad_())
    trained.sum().backward()
    assert torch.equal(served, trained.detach())


@pytest.mark.parametrize("impl", ["blocked", "fused"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_groups_normalise_each_group_alone(impl: str, channels_last: bool) -> None:
    # Per-tower LRN (lrn_scope="tower"): equal to the reference on each half, bit for bit
    # equal to our own LRN run on each half, gradients included; memory format kept.
    x = _input((2, 12, 5, 4), channels_last)
    grouped = LocalResponseNorm(5, ALPHA, BETA, K, groups=2, impl=impl)
    y = grouped(x)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    halves = [reference_lrn(h, 5, ALPHA, BETA, K) for h in x.detach().chunk(2, 1)]
    torch.testing.assert_close(y, torch.cat(halves, 1), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    parts = [h.detach().clone().requires_grad_() for h in x.chunk(2, 1)]
    plain = LocalResponseNorm(5, ALPHA, BETA, K, impl=impl)
    outs = [plain(p) for p in parts]
    assert torch.equal(y, torch.cat(outs, 1))
    expected = torch.autograd.grad(outs, parts, list(g.chunk(2, 1)))
    assert torch.equal(grad, torch.cat(expected, 1))
    # Across all channels the edge maps of each half see the other half: a different result.
    assert not torch.allclose(y, LocalResponseNorm(5, ALPHA, BETA, K, impl=impl)(x))
    with pytest.raises(ValueError, match="groups"):
        LocalResponseNorm(groups=5)(x)
