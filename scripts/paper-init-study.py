#!/usr/bin/env python3
"""Why the paper net dies (or learns) in its first steps, on real 227 px pictures.

Fashion-MNIST (Debian's IDX files) resized to 256 px as `alexnet prepare --size 256` does
(bicubic), replicated to RGB, random 227 crops and flips, minus the training set's mean image
(0-255 units): the paper's input (section 2, 4.1). The paper net trains for ``--steps`` SGD steps
(momentum 0.9, weight decay 5e-4, batch 128: section 5) under each setting of a grid; each row
reports the loss, the fraction of dead ReLU units per layer (units that output zero for every
image of the batch) and the activation scale at init. The number of classes is varied by
relabelling: ``--classes 100`` uses ``fmnist-pairs``-style labels (an image and a second image
stacked side by side, 10 x 10 classes), so the images stay real.

    python scripts/paper-init-study.py --steps 60 --grid init=paper,caffe lr=0.01 > study.jsonl

One JSON line per setting; docs/RESULTS.md has the table and what it shows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.data.fashion_mnist import fashion_mnist
from alexnet.training.health import activation_report

SIDE, CROP = 256, 227


def load(per_class: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` training images of each class at 256 px (1 channel, uint8) and labels."""
    data = fashion_mnist()
    images, labels = data.splits["train"]
    gen = torch.Generator().manual_seed(seed)
    if classes == 10:
        picks = [torch.nonzero(labels == c).flatten() for c in range(10)]
        index = torch.cat([p[torch.randperm(len(p), generator=gen)[:per_class]] for p in picks])
        small, y = images[index].float(), labels[index]
    else:  # two items side by side: class 10 * left + right, 100 classes of real pictures
        left = torch.randint(0, len(labels), (per_class * 100 * 3,), generator=gen)
        right = torch.randint(0, len(labels), (per_class * 100 * 3,), generator=gen)
        y_all = labels[left] * 10 + labels[right]
        keep = torch.cat([torch.nonzero(y_all == c).flatten()[:per_class] for c in range(100)])
        small = torch.cat([images[left[keep]], images[right[keep]]], dim=3).float()
        small = F.pad(small, (0, 0, 14, 14))  # 28 x 56 -> 56 x 56, the pair centred
        y = y_all[keep]
    out = torch.empty(len(y), 1, SIDE, SIDE, dtype=torch.uint8)
    for i in range(0, len(y), 256):
        big = F.interpolate(small[i : i + 256], size=(SIDE, SIDE), mode="bicubic", align_corners=False)
        out[i : i + 256] = big.round().clamp(0, 255).to(torch.uint8)
    return out, y


def batches(images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, batch: int, gen: torch.Generator):
    """Endless random 227 crops + flips of shuffled batches, RGB, minus the mean image."""
    while True:
        order = torch.randperm(len(labels), generator=gen)
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s : s + batch]
            top, left = (int(v) for v in torch.randint(0, SIDE - CROP + 1, (2,), generator=gen))
            x = images[idx, :, top : top + CROP, left : left + CROP].float() - mean[:, top : top + CROP, left : left + CROP]
            flip = torch.rand(batch, generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            yield x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last), labels[idx]


def run(setting: dict, images, labels, classes: int, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    options = {"init": setting["init"], "lrn_convention": setting["lrn"]}
    model = models.create("alexnet", classes, **options).to(memory_format=torch.channels_last)
    mean = images.float().mean(0)
    gen = torch.Generator().manual_seed(seed)
    stream = batches(images, labels, mean, 128, gen)
    x0, _ = next(stream)
    at_init = activation_report(model, x0)
    decay = [p for p in model.parameters()]
    opt = torch.optim.SGD(decay, lr=setting["lr"], momentum=0.9, weight_decay=5e-4)
    warm = setting.get("warmup", 0)
    losses, dead = [], []
    start = time.time()
    for step in range(steps):
        if warm:
            for g in opt.param_groups:
                g["lr"] = setting["lr"] * min(1.0, (step + 1) / warm)
        model.train()
        x, y = next(stream)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(round(float(loss.detach()), 4))
        print(f"  step {step + 1} loss {losses[-1]:.3f} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
        if (step + 1) % 20 == 0 or step + 1 == steps:
            dead.append({"step": step + 1, **{k: round(v.dead_fraction, 3) for k, v in activation_report(model, x).items()}})
        if not math.isfinite(losses[-1]):
            break
    return {
        **setting, "classes": classes, "seed": seed, "steps": len(losses), "seconds": round(time.time() - start, 1),
        "init_std": {k: round(v.std, 4) for k, v in at_init.items()},
        "init_rms": {k: round(v.rms, 4) for k, v in at_init.items()},
        "init_dead": {k: round(v.dead_fraction, 3) for k, v in at_init.items()},
        "loss_first10": sum(losses[:10]) / min(10, len(losses)), "loss_last10": sum(losses[-10:]) / min(10, len(losses)),
        "loss_max": max(losses), "dead": dead, "losses": losses,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--classes", type=int, choices=(10, 100), default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 (init, lrn, lr, warmup)")
    args = p.parse_args()
    axes = {"init": ["paper"], "lrn": ["code"], "lr": [0.01], "warmup": [0]}
    for item in args.grid:
        key, _, values = item.partition("=")
        axes[key] = [type(axes[key][0])(v) for v in values.split(",")]
    images, labels = load(args.per_class, args.classes, args.seed)
    for combo in itertools.product(*axes.values()):
        setting = dict(zip(axes, combo))
        print(json.dumps(run(setting, images, labels, args.classes, args.steps, args.seed)), flush=True)
        print(f"done {setting}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
