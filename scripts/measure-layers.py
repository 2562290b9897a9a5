#!/usr/bin/env python3
"""Time the layer tools against their targets: the report's extra time, `alexnet probe` on a run,
and `alexnet explain` (Grad-CAM, occlusion) per image through a freshly initialised paper net.

Usage: PYTHONPATH=. python3 scripts/measure-layers.py RUN [--skip-probe]   (RUN: e.g. the demo run)
The report is timed with the unit cache (RUN/layers/) removed, then cached; the paper net and its
three photo-like images are written to a temporary folder. Prints the load average beside each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "alexnet", *args], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, out


def load() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run folder (the demo run)")
    parser.add_argument("--skip-probe", action="store_true", help="do not time alexnet probe (minutes)")
    args = parser.parse_args()
    run = Path(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.rmtree(run / "layers", ignore_errors=True)
        for what in ("report, units mined now (target: at most 60 s over the report without them)", "report, units cached"):
            seconds, _ = timed("report", str(run), "--no-progress", "--out", f"{tmp}/report.html")
            print(f"{what}: {seconds:.1f} s ({load()})")
        if not args.skip_probe:
            seconds, _ = timed("probe", str(run), "--no-progress", "--json")
            print(f"probe {run}: {seconds:.1f} s (target: < 300 s; {load()})")
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.helpers.interop import make_run, real_images

        paper = make_run(Path(tmp) / "paper", "alexnet", num_classes=1000)
        images = real_images(Path(tmp) / "images", 3, colour=True)
        for method, target in (("gradcam", 0.5), ("occlusion", 5.0)):
            _, out = timed("explain", str(paper), *images, "--method", method, "--json")
            per_image = [r["seconds"] for r in json.loads(out)]
            print(f"explain {method} through the paper net: {', '.join(f'{s:.2f}' for s in per_image)} s per image "
                  f"(target: < {target} s; the first includes warm-up; {load()})")


if __name__ == "__main__":
    main()
