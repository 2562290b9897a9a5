"""``alexnet explain``: where in an image a prediction comes from. ``gradcam`` (default): the last
convolutional layer's maps weighted by the class score's gradient (Selvaraju et al. 2017);
``occlusion``: the drop in the class probability when a grey square hides each part of the
image (Zeiler & Fergus 2014, Figure 7). ``--out`` draws each image beside its map."""

from __future__ import annotations

import argparse
import json

from alexnet.cli.common import add_runtime_options, non_negative_int, png_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="Grad-CAM or occlusion map of images: where a prediction comes from",
                       description=__doc__)  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run folder, checkpoint or torchvision weights file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads), or - (standard input)")
    p.add_argument("--method", choices=("gradcam", "occlusion"), default="gradcam", help="default gradcam")
    p.add_argument("--class", dest="target", type=non_negative_int, metavar="INDEX",
                   help="explain this class index (default: each image's predicted class)")  # fmt: skip
    p.add_argument("--out", type=png_file, metavar="FILE.png", help="draw each image beside its map into this PNG")
    p.add_argument("--json", action="store_true", help="print JSON, with each map as rows of numbers")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.data.images import STDIN_NAME, read_image_bytes
    from alexnet.errors import UserError
    from alexnet.inference import open_predictor
    from alexnet.reporting.explain import NO_LAYERS, explain_pixels, overlay
    from alexnet.runfolder import BASELINE, run_kind

    if run_kind(args.run) == BASELINE:
        raise UserError(f"{args.run} is a baseline run: {NO_LAYERS}")
    predictor = open_predictor(args.run, args.device, args.precision)
    bgr = predictor.convention.channel_order == "BGR"
    results, rows, captions = [], [], []
    for name in args.images:
        pixels = predictor.decode(read_image_bytes(name), name)
        e = explain_pixels(predictor, pixels, args.method, args.target)
        shown = STDIN_NAME if name == "-" else name
        results.append({"image": shown} | e.to_dict(with_map=args.json))
        picture = pixels.flip(0) if bgr and pixels.shape[0] == 3 else pixels
        rows.append([picture, overlay(pixels, e.heat, bgr)])
        captions.append([e.label[:14], f"{e.probability:.2f} {args.method}"])
        if not args.json:
            peak = divmod(int(e.heat.argmax()), e.heat.shape[1])
            print(f"{shown}: {args.method} of {e.label!r} (probability {e.probability:.3f}): strongest at row {peak[0]}, "
                  f"column {peak[1]} of {e.heat.shape[0]}x{e.heat.shape[1]}; {e.seconds:.2f} s")  # fmt: skip
    if args.out:
        from alexnet.io import atomic_write
        from alexnet.reporting import grids
        from alexnet.reporting.html import png

        data = png(grids.image_rows(rows, captions, tile=160, first_gap=0))
        atomic_write(args.out, lambda f: f.write(data))
        if not args.json:
            print(f"maps drawn to {args.out}")
    if args.json:
        print(json.dumps(results))
    return 0
