"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded without pickle code.

A checkpoint is always loadable with ``torch.load(path, weights_only=True)``: loading never
executes code from the file. It holds the model weights and everything needed to resume
exactly (optimizer, scheduler, RNG states, the position inside the epoch) or to use the model
(model name and options, classes, input normalisation).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from alexnet.errors import UserError
from alexnet.io import atomic_write

KIND = "alexnet-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("kind", "format_version", "model", "model_name", "model_options", "num_classes", "classes", "data")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename)."""
    payload = {"kind": KIND, "format_version": FORMAT_VERSION, **checkpoint}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; every problem is a one-line :class:`UserError`."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if not candidate.is_file():
            raise UserError(f"{path} is a folder without checkpoints/last.pt; pass a run folder or a .pt file")
        path = candidate
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on foreign or damaged files
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint ({reason}); it may be truncated or not a PyTorch file") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise UserError(
            f"{path} is not an alexnet checkpoint (a bare state_dict or another program's file?); "
            "train one with `alexnet train` or load weights with alexnet.models.create(...).load_state_dict"
        )
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer alexnet (format {ckpt['format_version']}); upgrade alexnet")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise UserError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return ckpt


def build_model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Recreate the model of a checkpoint and load its weights."""
    from alexnet import models

    model = models.create(ckpt["model_name"], ckpt["num_classes"], **ckpt["model_options"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not fit model {ckpt['model_name']!r}: {str(e).splitlines()[0]}") from None
    return model
