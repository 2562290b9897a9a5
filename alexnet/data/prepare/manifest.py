"""``OUT/manifest.json``: what a prepared dataset holds; written last, so its presence means
the dataset is complete.

Layout of OUT::

    manifest.json              this file
    train-000000.tar ...       WebDataset shards (<key>.jpg|.npy + <key>.cls)
    train.index.npy            int64 (N, 4): shard, byte offset of the image data, length, label
    train.keys.txt             the N sample keys, one a line, same order
    val-000000.tar, val.index.npy, val.keys.txt
    mean_image.npy             float32 (size, size, 3) mean training image, 0-255 units

Manifest fields: ``format`` and ``version``; ``name``; ``source`` (``layout``, ``path``);
``image_size``; ``encoding`` (``jpeg`` or ``raw``), ``quality``, ``extension``; ``shard_size``;
``classes`` (``{"id", "name"}`` in label order); ``splits.<split>`` with ``count`` (stored
samples), ``inputs`` (input files found), ``shards``, ``index``, ``keys`` and ``skipped`` (every
input that was not used: ``key``, ``file``, ``reason``), so that ``count + len(skipped) ==
inputs``; ``statistics`` of the training split (see :mod:`alexnet.data.prepare.stats`);
``settings_digest`` (identifies the inputs and settings; a re-run with the same ones is a
no-op); optional ``hierarchy`` (ILSVRC with its devkit: ``children``, inner synset WNID ->
child WNIDs, and ``names``, from meta.mat). Nothing in it depends on the time, the machine or the number of workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alexnet.errors import UserError

FORMAT, VERSION = "alexnet-prepared", 1
MANIFEST = "manifest.json"
INDEX_COLUMNS = ("shard", "offset", "length", "label")


def index_name(split: str) -> str:
    return f"{split}.index.npy"


def keys_name(split: str) -> str:
    return f"{split}.keys.txt"


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the prepared dataset in ``root``; a :class:`UserError` if it is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"{root} is not a prepared dataset (no {MANIFEST}); run `alexnet prepare SOURCE {root}` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read ({e}); run `alexnet prepare` again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not an alexnet prepared-dataset manifest")
    if manifest.get("version") != VERSION:
        raise UserError(
            f"{path} has format version {manifest.get('version')}; this alexnet reads version {VERSION}: "
            "run `alexnet prepare` again"
        )
    return manifest
