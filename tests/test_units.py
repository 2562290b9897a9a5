"""Top-k mining of unit activations: the streaming pass against a full sort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.evaluation.features import open_session
from alexnet.evaluation.units import RunningTopK, conv_layers, load_or_mine, mine_top_units, units_paths
from tests.helpers.interop import make_run

SYN = "synthetic:classes=4,size=28,train=24,val=40,channels=3"  # 28 px crops: what make_run's alexnet-small takes


def test_running_top_k_equals_a_full_sort() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 5, 4, 3, generator=g) for n in (7, 1, 12, 6)]
    tracker = RunningTopK("conv", 5, k=9)
    for b in batches:
        tracker.update(b)
    got = tracker.result()
    everything = torch.cat(batches)  # 26 images
    best, where = everything.flatten(2).max(2)  # 26 x 5
    order = best.T.argsort(dim=1, descending=True)[:, :9]
    assert np.array_equal(got.images, order.numpy())
    assert np.allclose(got.values, best.T.gather(1, order).numpy())
    pos = where.T.gather(1, order)
    assert np.array_equal(got.ys, (pos // 3).numpy()) and np.array_equal(got.xs, (pos % 3).numpy())
    assert got.count == 26
    assert np.allclose(got.mean, best.double().mean(0).numpy()) and np.allclose(got.std, best.double().std(0, unbiased=False).numpy())


def test_fewer_images_than_k_are_padded() -> None:
    tracker = RunningTopK("conv", 2, k=4)
    tracker.update(torch.tensor([[[[1.0]], [[2.0]]], [[[3.0]], [[0.5]]]]))
    r = tracker.result()
    assert r.images.tolist() == [[1, 0, -1, -1], [0, 1, -1, -1]]
    assert np.isneginf(r.values[:, 2:]).all()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("units") / "run")


def test_mining_a_split_equals_sorting_all_its_activations(tiny_run: Path) -> None:
    session = open_session(tiny_run, SYN, precision_name="fp32")
    units = mine_top_units(session, "val", k=9, batch_size=16, progress=False)  # 40 images in 3 batches
    model = session.loaded.model.eval()
    captured: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: captured.__setitem__(n, o.clone()))
             for n, m in conv_layers(model).items()]  # fmt: skip
    images = session.dataset.splits["val"][0]
    with torch.inference_mode():
        model(session.pipeline.eval(images))
    for h in hooks:
        h.remove()
    assert list(units) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for name, u in units.items():
        best = captured[name].flatten(2).max(2).values.T  # units x 40
        order = best.argsort(dim=1, descending=True, stable=True)[:, :9]
        assert np.allclose(u.values, best.gather(1, order).numpy(), atol=1e-5), name
        top_again = best.gather(1, torch.from_numpy(u.images))  # the mined images hold the mined values
        assert np.allclose(top_again.numpy(), u.values, atol=1e-5), name


def test_mined_units_are_cached_in_the_run_folder(tiny_run: Path) -> None:
    session = open_session(tiny_run, SYN, precision_name="fp32")
    first, built = load_or_mine(session, tiny_run, progress=False, log=lambda _: None)
    again, built_again = load_or_mine(session, tiny_run, progress=False, log=lambda _: None)
    assert built and not built_again
    assert all(np.array_equal(first[n].images, again[n].images) for n in first)
    arrays, meta = units_paths(tiny_run, "val")
    assert arrays.is_file() and meta.is_file()
    meta.write_text("{broken")  # a damaged record: mined again, not an error
    assert load_or_mine(session, tiny_run, progress=False, log=lambda _: None)[1]
