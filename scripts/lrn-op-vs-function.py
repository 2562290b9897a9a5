"""alexnet-small conv1's LRN (128x32x28x28 bf16 NHWC), forward + backward: custom op vs former
autograd.Function, interleaved pairs in one process (load drift hits both), 21 pairs."""
import statistics
import time

import torch

from alexnet.models.lrn import LocalResponseNorm

x = (torch.randn(128, 32, 28, 28) * 3).relu().to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
g = torch.randn(x.shape).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
mods = {impl: LocalResponseNorm(impl=impl) for impl in ("blocked", "function")}
times = {k: [] for k in mods}
for i in range(22):
    for k, m in (mods.items() if i % 2 else reversed(mods.items())):
        t = time.perf_counter(); y = m(x); y.backward(g); dt = time.perf_counter() - t; x.grad = None
        if i: times[k].append(dt)
ratios = [a / b for a, b in zip(times["blocked"], times["function"])]
print({k: f"median {statistics.median(v)*1e3:.1f} ms, best {min(v)*1e3:.1f} ms" for k, v in times.items()},
      f"op/function per-pair ratio median {statistics.median(ratios):.3f}")
