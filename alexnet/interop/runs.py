"""Imported weights become an ordinary run folder (``RUN/checkpoints/last.pt`` + ``RUN/config.json``).

``eval``, ``predict``, ``export``, ``serve`` and ``--init-from`` read it like a trained run's:
the checkpoint holds the weights, the model name and options, the classes and the input
convention record; it has no optimizer state, so it cannot be resumed (there is nothing to resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from alexnet.checkpoint import Checkpoint, DataSpec, save_checkpoint
from alexnet.data.convention import InputConvention
from alexnet.errors import UserError
from alexnet.runfolder import (
    IMPORTED_KEY,
    IMPORTED_RUN,
    check_folder_path,
    claim_folder,
    last_checkpoint,
    run_folder_lock,
    write_config,
)


def write_run(
    out: str | Path,
    model: nn.Module,
    model_name: str,
    model_options: dict[str, Any],
    classes: list[str],
    convention: InputConvention,
    data_name: str,
    provenance: dict[str, Any],
    force: bool = False,
) -> Path:
    """Write ``model`` as a run folder at ``out``; returns the checkpoint path.

    ``classes`` are label-ordered names or ids (ImageNet WNIDs display as names); ``convention``
    is the input the weights expect, stored in the checkpoint as every trained run's is;
    ``provenance`` (where the weights came from) goes into ``config.json``. Like every command
    that writes a run folder it holds the folder's lock, and it writes only into a new or empty
    folder, or over an imported run with ``force`` (:func:`check_out`): a trained run, a
    baseline, a prepared dataset or anyone's files are never mixed with an import.
    """
    out = Path(out)
    ckpt = last_checkpoint(out)
    with run_folder_lock(out):
        check_out(out, force)
        _write(out, ckpt, model, model_name, model_options, classes, convention, data_name, provenance)
    return ckpt


def check_out(out: str | Path, force: bool = False) -> None:
    """The one-line refusal :func:`write_run` would give for ``out``, before any long work."""
    check_folder_path(out)
    claim_folder(out, IMPORTED_RUN, force)


def _write(
    out: Path, ckpt: Path, model: nn.Module, model_name: str, model_options: dict[str, Any], classes: list[str],
    convention: InputConvention, data_name: str, provenance: dict[str, Any],
) -> None:
    try:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        data = DataSpec.of(data_name, False, convention)
        save_checkpoint(ckpt, Checkpoint(weights=model.state_dict(), model_name=model_name, model_options=model_options,
                                         classes=tuple(classes), data=data, config={IMPORTED_KEY: provenance}))  # fmt: skip
        write_config(out, {IMPORTED_KEY: provenance, "model": model_name, "model_options": model_options})
    except OSError as e:
        raise UserError(f"cannot write the run folder {out}: {e.strerror or e}") from None
