"""Shared by the interop and serving tests: small run folders and real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet import models
from alexnet.data.convention import InputConvention, InputNorm
from alexnet.interop.runs import write_run
from tests.helpers.cli import FASHION_DIR, HAS_FASHION

CLASSES = ("cat", "dog", "ship", "tree")


def make_run(out: Path, name: str = "alexnet-small", num_classes: int = 4, mean_image: bool = False, seed: int = 0,
             options: dict | None = None) -> Path:
    """A run folder holding a freshly initialised ``name`` (RGB, model ``options``), as `alexnet import` writes one."""
    torch.manual_seed(seed)
    model = models.create(name, num_classes, **(options or {}))
    image_size, crop = {"alexnet-small": (32, 28), "alexnet": (256, 227), "alexnet-owt": (256, 224)}[name]
    gen = torch.Generator().manual_seed(seed)
    norm = InputNorm((120.0, 115.0, 100.0), (60.0, 58.0, 62.0),
                     torch.rand(3, image_size, image_size, generator=gen) * 255 if mean_image else None)  # fmt: skip
    classes = list(CLASSES) if num_classes == len(CLASSES) else [f"class{i}" for i in range(num_classes)]
    write_run(out, model, name, dict(options or {}), classes, InputConvention(3, image_size, crop, norm), "test",
              {"from": "tests"})
    return out


def real_images(folder: Path, count: int = 8, colour: bool = False) -> list[str]:
    """``count`` pictures as files: Fashion-MNIST test images (real, grayscale PNGs) when installed,
    else (or with ``colour``, where the channel order must show) photo-like colour JPEGs from
    ``alexnet bench prepare``'s generator."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    if HAS_FASHION and not colour:
        from alexnet.data.idx import find_idx_file, read_idx

        pixels = read_idx(find_idx_file(FASHION_DIR, "t10k-images-idx3-ubyte"))
        for i in range(count):
            path = folder / f"fashion_{i}.png"
            Image.fromarray(np.asarray(pixels[i]).reshape(28, 28)).save(path)
            files.append(str(path))
        return files
    from alexnet.bench.prepare import photo_like

    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"photo_{i}.jpg"
        photo_like(rng, 160, 120).save(path, "JPEG", quality=90)
        files.append(str(path))
    return files


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``alexnet serve RUN`` as a real subprocess on a free loopback port."""

    def __init__(self, run: Path, *args: str, startup_timeout: float = 240) -> None:
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        from tests.helpers.cli import REPO

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alexnet", "serve", str(run), "--port", str(self.port), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
        )  # fmt: skip
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not answer /healthz in time")

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL); returns what it wrote to stderr."""
        import subprocess

        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def run_main(capsys: object, *args: str) -> tuple[int, str, str]:
    """``alexnet ARGS`` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from alexnet.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    return code, captured.out, captured.err
