"""``OUT/manifest.json``: what a prepared dataset holds; written last, so its presence means
the dataset is complete.

Layout of OUT::

    manifest.json              this file
    train-000000.tar ...       WebDataset shards (<key>.jpg|.npy + <key>.cls)
    train.index.npy            int64 (N, 4): shard, byte offset of the image data, length, label
    train.keys.txt             the N sample keys, one a line, same order
    val-000000.tar, val.index.npy, val.keys.txt
    mean_image.npy             float32 (size, size, channels) mean training image, 0-255 units

Manifest fields: ``format`` and ``version``; ``name``; ``source`` (``layout``, ``path``);
``image_size``; ``channels`` (3: RGB, 1: grey; absent before ``--channels``: 3); ``encoding`` (``jpeg`` or ``raw``), ``quality``, ``extension``; ``shard_size``;
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

from alexnet.data.prepare.items import SPLITS
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
    problem = _problem(manifest)
    if problem:
        raise UserError(f"{path} is damaged ({problem}); run `alexnet prepare` again")
    return manifest


def channels(manifest: dict[str, Any]) -> int:
    """Channels of the stored images (manifests written before ``--channels`` hold RGB)."""
    return manifest.get("channels", 3)


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_numbers(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _is_file_name(v: Any) -> bool:
    """A plain file name inside the dataset folder: a manifest never points outside it."""
    return isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and "\\" not in v and "\0" not in v


def _problem(m: dict[str, Any]) -> str | None:
    """What is wrong with the fields readers use (None: nothing); a hand-edited or damaged
    manifest is a one-line error, never a KeyError deep inside a reader."""
    if not _is_int(m.get("image_size"), 1):
        return "image_size is not a positive whole number"
    if not isinstance(m.get("encoding"), str) or not isinstance(m.get("name"), str):
        return "encoding or name is missing"
    classes = m.get("classes")
    if not isinstance(classes, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("name"), str) for c in classes
    ):
        return "classes is not a list of {id, name}"
    splits = m.get("splits")
    if not isinstance(splits, dict):
        return "splits is missing"
    for split in SPLITS:
        s = splits.get(split)
        if not isinstance(s, dict) or not _is_int(s.get("count")) or not _is_int(s.get("inputs")):
            return f"splits.{split} has no count"
        if not (_is_file_name(s.get("index")) and _is_file_name(s.get("keys"))):
            return f"splits.{split} names no index or keys file"
        if not isinstance(s.get("shards"), list) or not all(_is_file_name(x) for x in s["shards"]):
            return f"splits.{split}.shards is not a list of file names"
        if not isinstance(s.get("skipped"), list) or not all(
            isinstance(x, dict) and all(isinstance(x.get(k), str) for k in ("key", "file", "reason")) for x in s["skipped"]
        ):
            return f"splits.{split}.skipped is not a list of {{key, file, reason}}"
    c = channels(m)
    if not _is_int(c) or c not in (1, 3):
        return "channels is not 1 or 3"
    st = m.get("statistics")
    if st is not None:
        if not isinstance(st, dict) or not all(_is_numbers(st.get(k), c) for k in ("mean", "std")):
            return "statistics has no mean and std"
        if c == 3 and not _is_numbers(st.get("eigenvalues"), 3):
            return "statistics has no eigenvalues"
        vectors = st.get("eigenvectors")
        if c == 3 and (not isinstance(vectors, list) or len(vectors) != 3 or not all(_is_numbers(r, 3) for r in vectors)):
            return "statistics.eigenvectors is not 3x3"
        if not _is_file_name(st.get("mean_image")) or not _is_int(st.get("images")):
            return "statistics names no mean image"
    return None
