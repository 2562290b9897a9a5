"""torch.compile on the CPU: every model traces as one graph (the LRN is a custom op with a fake
implementation and a registered backward), and ``alexnet train --compile`` trains like eager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet import models
from tests.helpers.cli import run_cli

# Narrow layers: tracing cost does not depend on widths, the eager reference run does.
NARROW = {"widths": (8, 16, 16, 16, 8), "fc_width": 32}


@pytest.mark.parametrize(("name", "options", "side"), [("alexnet", NARROW, 227), ("alexnet-small", NARROW, 28),
                                                         ("alexnet-small", NARROW | {"lrn_order": "pool-norm", "lrn_scope": "tower"}, 28),
                                                         ("alexnet-owt", {}, 224)])  # fmt: skip
def test_every_model_compiles_as_one_graph_and_matches_eager(name: str, options: dict, side: int) -> None:
    # aot_eager: Dynamo + AOTAutograd (where the former LRN failed: its fake-tensor pass) without
    # Inductor's C++ build, which takes minutes on a small CPU (the CLI test below runs it).
    torch.manual_seed(0)
    model = models.create(name, 10, dropout=0.0, **options).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([3, 7])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: no graph break allowed
    grads = []
    for net in (model, compiled):
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    # aot_eager runs the same kernels: equal up to reassociation in the decomposed ops.
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-3, atol=1e-3)
    for a, b in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


@pytest.mark.slow
def test_train_compile_cli_matches_eager(tmp_path: Path) -> None:
    # Inductor for real (its C++ build: ~1 min on 2 idle cores). fp32, 2 steps: the compiled
    # run's losses equal the eager run's within 1e-4 relative (the same kernels up to fusion).
    args = ["train", "--data", "synthetic:classes=4,size=28,train=64,val=32,channels=1", "--epochs", "1",
            "--batch-size", "32", "--widths", "8,16,16,16,8", "--fc-width", "32", "--device", "cpu",
            "--precision", "fp32", "--no-progress", "--workers", "0"]  # fmt: skip
    metrics = []
    for flag in ([], ["--compile"]):
        run = tmp_path / ("compiled" if flag else "eager")
        proc = run_cli(*args, *flag, "--out", str(run), timeout=900)
        assert proc.returncode == 0, proc.stderr
        metrics.append(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]))
    for key in ("train_loss", "val_loss"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4)
