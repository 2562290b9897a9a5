"""Tune sift-fv's vocabulary (GMM components x PCA dims) and SVM weight decay on a held-out part of
Fashion-MNIST's *training* set (never the test set): fit on the first TRAIN training images, score
the last 10,000. Usage: ``OMP_NUM_THREADS=1 python scripts/tune-sift-fv.py [TRAIN] [K:D[:L2,L2...] ...]``
(default L2: 1e-4 and 1e-3).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from alexnet.baselines.fisher import SiftFisher
from alexnet.baselines.pipeline import topk_errors
from alexnet.baselines.svm import LinearSVM, SvmParams
from alexnet.data.fashion_mnist import fashion_mnist

train_n = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
grid = [a.split(":") for a in sys.argv[2:]] or [["32", "32"], ["16", "32"], ["64", "32"], ["32", "16"]]
images, labels = fashion_mnist().splits["train"]
fit_x, fit_y = images[:train_n], labels[:train_n].numpy()
held_x, held_y = images[-10_000:], labels[-10_000:]
sample = images[torch.randperm(train_n, generator=torch.Generator().manual_seed(0))[: SiftFisher.FIT_IMAGES]]
for spec in grid:
    k, d = int(spec[0]), int(spec[1])
    l2s = [float(v) for v in spec[2].split(",")] if len(spec) > 2 else [1e-4, 1e-3]
    start = time.perf_counter()
    extractor = SiftFisher(28, 1, components=k, pca_dims=d, seed=0).fit(sample)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    x_fit = torch.cat([extractor.transform(fit_x[i : i + 1000]) for i in range(0, train_n, 1000)]).numpy()
    rate = train_n / (time.perf_counter() - start)
    x_held = torch.cat([extractor.transform(held_x[i : i + 1000]) for i in range(0, 10_000, 1000)])
    for l2 in l2s:
        start = time.perf_counter()
        svm = LinearSVM(SvmParams(l2=l2)).fit(x_fit, fit_y, 10)
        top1, top5 = topk_errors(svm.decision_function(x_held), held_y)
        train1, _ = topk_errors(svm.decision_function(x_fit), torch.from_numpy(fit_y))
        print(json.dumps({"components": k, "pca_dims": d, "l2": l2, "dim": x_fit.shape[1], "train_n": train_n,
                          "heldout_acc": 1 - top1, "heldout_top5_acc": 1 - top5, "train_err": train1,
                          "extractor_fit_s": round(fit_s, 1), "features_img_per_s": round(rate),
                          "svm_fit_s": round(time.perf_counter() - start, 1), "lbfgs_iter": svm.iterations}), flush=True)
