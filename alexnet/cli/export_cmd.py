"""``alexnet export RUN --format onnx --out model.onnx``: a model for other runtimes.

The export is checked before it is written: onnxruntime's logits must match PyTorch's within
1e-4 (max abs) on 8 images (``--check-images`` to use your own files). The preprocessing goes
into the model's metadata; ``alexnet predict model.onnx IMAGE`` runs it under onnxruntime.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

FORMATS = ("onnx",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run to ONNX (checked with onnxruntime)", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder, checkpoint, or torchvision AlexNet state_dict")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default onnx)")
    p.add_argument("--out", required=True, help="the file to write (e.g. model.onnx)")
    p.add_argument("--check-images", nargs="+", metavar="IMAGE", help="images for the check (default: 8 fixed noise images)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.interop.onnx_model import export_onnx

    result = export_onnx(args.run, args.out, args.check_images)
    if args.json:
        print(json.dumps(asdict(result)))
        return 0
    print(
        f"wrote {result.path} ({result.model}, {result.bytes / 1e6:.1f} MB, dynamic batch); onnxruntime check on "
        f"{result.images} images: max abs logit difference {result.max_abs_diff:.2e} (logits up to {result.max_abs_logit:.3g})"
    )
    return 0
