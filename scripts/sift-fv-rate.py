"""sift-fv feature-extraction cost at 224 px (the ImageNet eval crop), colour, in CPU seconds per image
(one thread: ``OMP_NUM_THREADS=1 python scripts/sift-fv-rate.py``), for the default vocabulary
(K=32, D=32) and the 2011 winner's (K=256, D=64). Smooth random images: the cost does not depend on
content. Prints one JSON line per vocabulary."""

import json
import time

import torch

from alexnet.baselines.fisher import SiftFisher
from alexnet.baselines.sift import dsift

g = torch.Generator().manual_seed(0)
imgs = torch.nn.functional.interpolate(torch.rand(24, 3, 28, 28, generator=g), size=224, mode="bilinear")
imgs = (imgs * 255).to(torch.uint8)
for k, d in ((32, 32), (256, 64)):
    e = SiftFisher(224, 3, components=k, pca_dims=d)
    c = time.process_time(); e.fit(imgs[:8]); fit_cpu = time.process_time() - c
    e.transform(imgs[8:10])
    c, w = time.process_time(), time.perf_counter(); f = e.transform(imgs[8:24]); cpu, wall = time.process_time() - c, time.perf_counter() - w
    c = time.process_time(); dsift(imgs[8:24], e.params); sift_cpu = time.process_time() - c
    print(json.dumps({"components": k, "pca_dims": d, "descriptors_per_image": int(e.masks.shape[1]), "dim": f.shape[1],
                      "bins": e.params.bins, "step": e.params.step,
                      "cpu_s_per_image": cpu / 16, "sift_only_cpu_s_per_image": sift_cpu / 16, "wall_s_per_image": wall / 16,
                      "threads": torch.get_num_threads()}), flush=True)
