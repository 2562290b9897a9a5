"""Imported weights become an ordinary run folder (``RUN/checkpoints/last.pt`` + ``RUN/config.json``).

``eval``, ``predict``, ``export``, ``serve`` and ``--init-from`` read it like a trained run's:
the checkpoint holds the weights, the model name and options, the classes and the input
normalisation; it has no optimizer state, so it cannot be resumed (there is nothing to resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from alexnet.checkpoint import LAST, Checkpoint, DataSpec, save_checkpoint
from alexnet.data.pipeline import InputNorm
from alexnet.errors import UserError
from alexnet.io import atomic_write_json


def write_run(
    out: str | Path,
    model: nn.Module,
    model_name: str,
    model_options: dict[str, Any],
    classes: list[str],
    channels: int,
    image_size: int,
    crop: int,
    norm: InputNorm,
    data_name: str,
    provenance: dict[str, Any],
) -> Path:
    """Write ``model`` as a run folder at ``out``; returns the checkpoint path.

    ``classes`` are label-ordered names or ids (ImageNet WNIDs display as names);
    ``provenance`` (where the weights came from) goes into ``config.json``.
    """
    out = Path(out)
    ckpt = out / "checkpoints" / LAST
    try:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        data = DataSpec(name=data_name, channels=channels, image_size=image_size, crop=crop, synthetic=False, norm=norm)
        save_checkpoint(ckpt, Checkpoint(weights=model.state_dict(), model_name=model_name, model_options=model_options,
                                         classes=tuple(classes), data=data, config={"imported": provenance}))  # fmt: skip
        atomic_write_json(out / "config.json", {"imported": provenance, "model": model_name, "model_options": model_options})
    except OSError as e:
        raise UserError(f"cannot write the run folder {out}: {e.strerror or e}") from None
    return ckpt
