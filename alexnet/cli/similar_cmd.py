"""``alexnet similar``: the training images nearest to image files by fc7 distance (Figure 4,
right), from an index of float16 fc7 vectors built once and cached in RUN/retrieval/ (rebuilt
when the run or the data change). Prints the time of one query against the whole index."""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time

from alexnet.cli.common import add_runtime_options, png_file, positive_int, show_progress

TARGET_MS = 50.0  # the goal: one query against 60,000 indexed images on 2 cores


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("similar", help="nearest training images of image files by fc7 distance", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder or checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads)")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--split", default="train", choices=("train", "val"), help="split to search (default train)")
    p.add_argument("--k", type=positive_int, default=8, help="neighbours per image (default 8)")
    p.add_argument("--out", type=png_file, metavar="GRID.png", help="also draw each image beside its neighbours")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while building the index")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from alexnet.data.images import load_image
    from alexnet.evaluation.features import features_of, images_at, session_for
    from alexnet.evaluation.retrieval import load_or_build_index
    from alexnet.inference import open_predictor

    predictor = open_predictor(args.run, args.device, args.precision)
    session = session_for(predictor.require_network("similar (fc7 distances)"), args.data, predictor.precision)
    m = session.loaded
    queries = torch.stack([load_image(p, m.convention) for p in args.images])
    log = (lambda msg: None) if args.json else print
    started = time.perf_counter()
    index, built = load_or_build_index(session, args.run, args.split, progress=show_progress(args), log=log)
    load_s = time.perf_counter() - started
    feats = features_of(session, queries).numpy()
    found, dist = index.search(feats, args.k)
    # One query against the whole index, timed after the index is loaded (median of 7).
    times = []
    for _ in range(7):
        t = time.perf_counter()
        index.search(feats[:1], args.k)
        times.append((time.perf_counter() - t) * 1000)
    query_ms = statistics.median(times)
    keys = session.dataset.keys(args.split) if hasattr(session.dataset, "keys") else None
    results = []
    for path, rows, ds in zip(args.images, found, dist):
        results.append({"image": path, "neighbours": [
            {"index": int(j), "key": keys[j] if keys else None, "label": int(index.labels[j]),
             "class": m.classes[int(index.labels[j])], "distance": float(d)} for j, d in zip(rows, ds)]})  # fmt: skip
    timing = {"indexed": len(index), "query_ms": query_ms, "target_ms": TARGET_MS, "index_built": built,
              "index_seconds": load_s}  # fmt: skip
    if args.out:
        from alexnet.io import atomic_write
        from alexnet.reporting.grids import image_rows

        rows = [[q, *images_at(session.dataset, args.split, r.tolist())] for q, r in zip(queries, found)]
        caps = [["query"] + [f"{n['class']} {n['distance']:.1f}" for n in res["neighbours"]] for res in results]
        buf = io.BytesIO()
        image_rows(rows, caps).save(buf, format="PNG")
        atomic_write(args.out, lambda f: f.write(buf.getvalue()))
    if args.json:
        print(json.dumps({"results": results, "timing": timing}, indent=2))
        return 0
    for res in results:
        print(res["image"])
        for rank, n in enumerate(res["neighbours"], 1):
            name = n["key"] or f"{args.split} #{n['index']}"
            print(f"  {rank:>2}. {n['distance']:9.3f}  {n['class']:<24} {name}")
    what = "built" if built else "loaded"
    print(f"index of {len(index):,} {args.split} images {what} in {load_s:.2f} s; one query: {query_ms:.1f} ms "
          f"(median of 7; target <= {TARGET_MS:.0f} ms for 60,000 images on 2 cores)")  # fmt: skip
    if args.out:
        print(f"grid written to {args.out}")
    return 0
