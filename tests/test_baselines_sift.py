"""The sift-fv baseline: dense SIFT against a direct per-pixel loop, Fisher vectors against the
formulas in float64 and against scikit-image, EM on a known mixture, and the pipeline end to end
on a prepared ImageNet-layout folder (eval, predict, round trip, resume)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from alexnet.baselines import BaselineConfig, evaluate_baseline, fit_baseline, load_baseline
from alexnet.baselines.fisher import Gmm, fisher_vectors, fit_gmm, region_masks
from alexnet.baselines.sift import CLIP, MAGNIF, DsiftParams, colour_descriptors, dsift
from tests.helpers import layouts as fx
from tests.helpers.cli import cli_main
from tests.helpers.shapes import draw_shapes, write_idx

# ----------------------------------------------------------------------------- dense SIFT


def reference_sift(image: np.ndarray, s: int, y0: int, x0: int) -> np.ndarray:
    """One RootSIFT descriptor, straight from the definition, in float64: every pixel votes its
    gradient magnitude into 2 orientation bins (linear) and up to 2 x 2 spatial bins (bilinear),
    weighted by a Gaussian window of sigma 2 bins centred on the patch."""
    g = gaussian_filter(image.astype(np.float64) / 255, s / MAGNIF, mode="nearest", truncate=3.0)
    h, w = g.shape
    desc = np.zeros((4, 4, 8))
    cy, cx = y0 + 1.5 * s, x0 + 1.5 * s
    for y in range(h):
        for x in range(w):
            gy = (g[y + 1, x] - g[y - 1, x]) / 2 if 0 < y < h - 1 else 0.0
            gx = (g[y, x + 1] - g[y, x - 1]) / 2 if 0 < x < w - 1 else 0.0
            t = (math.atan2(gy, gx) % (2 * math.pi)) / (2 * math.pi / 8)
            o = math.floor(t)
            frac = t - o
            window = math.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (2 * s) ** 2))
            for i in range(4):
                wy = max(0.0, 1 - abs(y - (y0 + i * s)) / s)
                for j in range(4):
                    wx = max(0.0, 1 - abs(x - (x0 + j * s)) / s)
                    v = math.hypot(gx, gy) * wy * wx * window
                    desc[i, j, o % 8] += v * (1 - frac)
                    desc[i, j, (o + 1) % 8] += v * frac
    d = desc.ravel()
    d = np.minimum(d / np.linalg.norm(d), CLIP)
    d = d / np.linalg.norm(d)
    return np.sqrt(d / d.sum())


def test_dense_sift_matches_a_direct_loop() -> None:
    rng = np.random.default_rng(0)
    image = (gaussian_filter(rng.uniform(0, 255, (22, 22)), 1.0) * 1.5).clip(0, 255).astype(np.uint8)
    p = DsiftParams(bins=(3, 4), step=3)
    d = dsift(torch.from_numpy(image)[None, None], p)[0].double().numpy()
    centres = p.centres(22).numpy()
    assert d.shape == (len(centres), 128) == (p.positions(22, 3) ** 2 + p.positions(22, 4) ** 2, 128)
    for t in (0, 7, 24, len(centres) - 1):  # first, middle, border and the last (coarse) one
        s = 3 if t < p.positions(22, 3) ** 2 else 4
        y0, x0 = (round(float(c) - 1.5 * s) for c in centres[t])
        np.testing.assert_allclose(d[t], reference_sift(image, s, y0, x0), atol=2e-5)


def test_dense_sift_follows_a_shifted_pattern_and_ignores_flat_patches() -> None:
    pattern = np.zeros((28, 28), np.uint8)
    pattern[8:16, 6:12] = 200
    pattern[10:13, 8:10] = 60
    shifted = np.roll(pattern, 2, axis=1)  # by one dense step
    p = DsiftParams(bins=(3,), step=2)
    a, b = dsift(torch.from_numpy(np.stack([pattern, shifted]))[:, None], p).view(2, 10, 10, 128)
    torch.testing.assert_close(b[:, 1:], a[:, :-1], rtol=0, atol=1e-6)
    assert (a[9, 9] == 0).all() and (a[4, 4] > 0).any()  # flat corner -> zeros; on the edges -> a descriptor
    colour = colour_descriptors(torch.full((1, 3, 28, 28), 51, dtype=torch.uint8), p)
    assert colour.shape == (1, 100, 96)
    torch.testing.assert_close(colour.view(100, 16, 3, 2)[..., 0], torch.full((100, 16, 3), 0.2))  # mean
    assert colour.view(100, 16, 3, 2)[..., 1].abs().max() < 1e-3  # std of a flat image


# ----------------------------------------------------------------------------- GMM and Fisher vectors


def test_em_recovers_a_known_mixture() -> None:
    gen = torch.Generator().manual_seed(1)
    means = torch.tensor([[-4.0, 0.0], [3.0, 3.0], [3.0, -4.0]])
    stds = torch.tensor([[0.5, 1.0], [1.0, 0.4], [0.7, 0.7]])
    counts = (1500, 3000, 1500)
    x = torch.cat([m + s * torch.randn(n, 2, generator=gen) for m, s, n in zip(means, stds, counts)])
    gmm = fit_gmm(x, 3, iterations=60, seed=0)
    order = gmm.means[:, 0].argsort(stable=True)
    order = order[torch.tensor([0, 1, 2])] if gmm.means[order[1], 1] > 0 else order[torch.tensor([0, 2, 1])]
    torch.testing.assert_close(gmm.means[order], means, atol=0.08, rtol=0)
    torch.testing.assert_close(gmm.variances[order].sqrt(), stds, atol=0.05, rtol=0)
    torch.testing.assert_close(gmm.weights[order], torch.tensor([0.25, 0.5, 0.25]), atol=0.02, rtol=0)


def _random_gmm(k: int, d: int, seed: int) -> Gmm:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g) + 0.5
    return Gmm(w / w.sum(), torch.randn(k, d, generator=g), torch.rand(k, d, generator=g) + 0.3)


def reference_fv(x: np.ndarray, gmm: Gmm, masks: np.ndarray) -> np.ndarray:
    """IJCV 2013 eqs. (16)-(17) per region in float64 loops, power + L2 per region, / sqrt(R)."""
    w, mu, var = (t.double().numpy() for t in (gmm.weights, gmm.means, gmm.variances))
    k, d = mu.shape
    log_p = np.array([[math.log(w[j]) - 0.5 * np.sum(np.log(2 * math.pi * var[j]) + (xt - mu[j]) ** 2 / var[j])
                       for j in range(k)] for xt in x])  # fmt: skip
    gamma = np.exp(log_p - log_p.max(1, keepdims=True))
    gamma /= gamma.sum(1, keepdims=True)
    blocks = []
    for mask in masks:
        t_count = mask.sum()
        g_mu, g_sigma = np.zeros((k, d)), np.zeros((k, d))
        for t, xt in enumerate(x):
            if mask[t]:
                for j in range(k):
                    z = (xt - mu[j]) / np.sqrt(var[j])
                    g_mu[j] += gamma[t, j] * z
                    g_sigma[j] += gamma[t, j] * (z * z - 1)
        g_mu /= t_count * np.sqrt(w)[:, None]
        g_sigma /= t_count * np.sqrt(2 * w)[:, None]
        fv = np.concatenate([g_mu.ravel(), g_sigma.ravel()])
        fv = np.sign(fv) * np.sqrt(np.abs(fv))
        blocks.append(fv / np.linalg.norm(fv))
    return np.concatenate(blocks) / math.sqrt(len(masks))


def test_fisher_vectors_match_the_formulas_and_scikit_image() -> None:
    gmm = _random_gmm(3, 4, seed=2)
    x = torch.randn(2, 18, 4, generator=torch.Generator().manual_seed(3)) * 1.5
    centres = torch.cartesian_prod(torch.arange(3.0), torch.arange(6.0)) * torch.tensor([4.0, 2.0]) + 1  # in a 12 px image
    masks = region_masks(centres, 12)
    assert masks.shape == (5, 18) and masks[0].sum() == 18 and masks[1:].sum() == 18
    ours = fisher_vectors(x, gmm, masks).double().numpy()
    assert ours.shape == (2, 5 * 2 * 3 * 4)
    for n in range(2):
        np.testing.assert_allclose(ours[n], reference_fv(x[n].double().numpy(), gmm, masks.numpy().astype(bool)), atol=2e-6)
    # scikit-image's plain Fisher vector (whole image): its mean gradients are ours, its variance
    # gradients ours with the opposite sign (it differentiates w.r.t. the variance the other way).
    from skimage.feature import fisher_vector
    from sklearn.mixture import GaussianMixture

    sk = GaussianMixture(3, covariance_type="diag")
    sk.weights_, sk.means_, sk.covariances_ = (t.double().numpy() for t in (gmm.weights, gmm.means, gmm.variances))
    sk.precisions_cholesky_ = 1 / np.sqrt(sk.covariances_)
    ref = fisher_vector(x[0].double().numpy(), sk)[3:]  # without the 3 weight gradients
    raw = fisher_vectors(x[:1], gmm, masks[:1], improved=False)[0].double().numpy()
    np.testing.assert_allclose(raw[:12], ref[:12], atol=1e-5)
    np.testing.assert_allclose(raw[12:], -ref[12:], atol=1e-5)


# ----------------------------------------------------------------------------- end to end


SMALL = {"components": 4, "pca_dims": 8, "max_iter": 40}


def test_sift_fv_learns_shapes(tmp_path: Path) -> None:
    folder = tmp_path / "shapes"
    write_idx(folder, "train", *draw_shapes(240, 0))
    write_idx(folder, "val", *draw_shapes(80, 1))
    m = fit_baseline(BaselineConfig(data=f"mnist:{folder}", features="sift-fv", components=8, pca_dims=16, max_iter=25),
                     tmp_path / "run", progress=False)  # fmt: skip
    assert m["feature_dim"] == 5 * 2 * 8 * 16 and 1 - m["val_top1_err"] >= 0.9, m


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny ILSVRC-2012 release prepared by ``alexnet prepare`` at 64 px; sift-fv fitted on it."""
    root = tmp_path_factory.mktemp("ilsvrc")
    src = fx.make_ilsvrc(root / "src", extracted=True, hostile=False)
    prepared = root / "prepared"
    code, _, err = _cli(None, "prepare", str(src), str(prepared), "--size", "64", "--workers", "1", "--no-progress")
    assert code == 0, err
    metrics = fit_baseline(BaselineConfig(data=str(prepared), features="sift-fv", **SMALL), root / "run", progress=False)
    return prepared, root / "run", metrics


def _cli(capsys: pytest.CaptureFixture[str] | None, *args: str) -> tuple[int, str, str]:
    if capsys is not None:
        return cli_main(capsys, *args)
    from alexnet.cli import main

    return main(list(args)), "", ""


def test_sift_fv_end_to_end_on_a_prepared_imagenet_folder(imagenet_run: tuple[Path, Path, dict], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    prepared, run, m = imagenet_run
    config = json.loads((run / "config.json").read_text())
    extractor = json.loads((run / "extractor.json").read_text())
    assert config["channels"] == 3 and extractor["streams"] == ["sift", "colour"]  # colour images: both descriptor types
    assert m["feature_dim"] == 2 * 5 * 2 * 4 * 8 and m["train_n"] == 9 and m["val_n"] == 6
    assert 0 <= m["val_top5_err"] <= m["val_top1_err"] <= 1 and m["val_top5_err"] == 0  # 3 classes: top-5 holds all
    assert m["extract_images_per_sec"] > 0 and m["extractor_fit_seconds"] > 0
    for npz in ("extractor.npz", "classifier.npz"):
        np.load(run / npz, allow_pickle=False)  # no pickle anywhere
    # eval on the run folder gives the fitted metrics; predict gives the scores of the loaded model
    code, stdout, err = cli_main(capsys, "eval", str(run), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert (result["top1_err"], result["top5_err"], result["n"]) == pytest.approx((m["val_top1_err"], m["val_top5_err"], 6))
    from PIL import Image

    from alexnet.data import open_dataset

    images, _ = open_dataset(str(prepared)).read("val", range(2))
    crop = config["crop"]
    top = (images.shape[-1] - crop) // 2
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(im[:, top : top + crop, top : top + crop].permute(1, 2, 0).numpy()).resize((64, 64)).save(paths[-1])
    code, stdout, err = cli_main(capsys, "predict", str(run), *map(str, paths), "--json", "--topk", "3")
    assert code == 0, err
    assert all(len(r["predictions"]) == 3 for r in json.loads(stdout))


def test_sift_fv_saved_model_gives_identical_scores_and_resumes(imagenet_run: tuple[Path, Path, dict]) -> None:
    prepared, run, m = imagenet_run
    model = load_baseline(run)
    x_val = np.load(run / "features" / "val.npy", allow_pickle=False)
    from alexnet.baselines.pipeline import image_batches
    from alexnet.data import open_dataset

    images = torch.cat([b for b, _ in image_batches(open_dataset(str(prepared)), "val", 100, model.config["crop"])])
    torch.testing.assert_close(load_baseline(run).extractor.transform(images), torch.from_numpy(x_val), rtol=0, atol=1e-6)
    # A killed run: classifier and val features gone, extractor and train features kept.
    before = {f: os.stat(run / f).st_mtime_ns for f in ("extractor.npz", "features/train.npy")}
    (run / "classifier.npz").unlink()
    (run / "features" / "val.npy").unlink()
    again = fit_baseline(BaselineConfig(data=str(prepared), features="sift-fv", **SMALL), run, progress=False)
    assert {f: os.stat(run / f).st_mtime_ns for f in before} == before
    assert (again["val_top1_err"], again["train_top1_err"]) == (m["val_top1_err"], m["train_top1_err"])
    assert evaluate_baseline(run)["top1_err"] == pytest.approx(m["val_top1_err"])


def test_demo_long_table_shows_the_fitted_sift_fv_row(imagenet_run: tuple[Path, Path, dict]) -> None:
    from alexnet.cli.demo_cmd import story_table

    m = imagenet_run[2]
    network = {"val_top1_err": 0.25, "train_seconds_total": 60.0}  # only the table's layout is under test here
    rows = [line for line in story_table([m], network, "DATA", long=True).splitlines() if line.startswith("2011  ")]
    assert len(rows) == 1 and "SIFT + Fisher vectors + linear SVM" in rows[0] and f"{1 - m['val_top1_err']:.2%}" in rows[0]
    short = story_table([], network, "DATA", long=False)
    assert "--features sift-fv" in short and "--features hog-rbf" in short


def test_baseline_cli_passes_the_vocabulary_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code, stdout, err = cli_main(capsys, "baseline", "--data", "synthetic:classes=3,size=16,train=24,val=12,channels=3",
                                 "--features", "sift-fv", "--gmm-components", "2", "--pca-dims", "4", "--max-iter", "5",
                                 "--no-progress", "--out", str(out), "--json")  # fmt: skip
    assert code == 0, err
    m = json.loads(stdout)
    assert m["feature_dim"] == 2 * 5 * 2 * 2 * 4 and m["features"] == "sift-fv"  # (sift, colour) x regions x (mu, sigma) x K x D
    assert json.loads((out / "extractor.json").read_text())["dsift"] == {"bins": [3, 4], "step": 2, "root": True}  # 6 px bins do not fit 16 px
