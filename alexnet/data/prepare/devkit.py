"""The ILSVRC-2012 development kit: class table (``data/meta.mat``) and validation labels.

``meta.mat`` holds a struct array ``synsets`` with fields ``ILSVRC2012_ID, WNID, words, gloss,
num_children, children, wordnet_height, num_train_images``: the 1000 leaf classes
(``num_children == 0``, IDs 1-1000) and 860 inner WordNet nodes above them, which are no
classes and are ignored. ``data/ILSVRC2012_validation_ground_truth.txt`` gives, for validation
image *n* on line *n*, the ILSVRC2012_ID of its class.

The ILSVRC2012_ID order is the devkit's own and is **not** the label order used by torchvision,
Caffe and timm (and here): label = index of the WNID in the sorted list of the 1000 WNIDs.
:class:`Devkit` maps one to the other.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet.errors import UserError

DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


@dataclass(frozen=True)
class Devkit:
    """Leaf classes of the devkit and the validation ground truth (as ILSVRC2012_IDs)."""

    wnid_of_id: dict[int, str]
    words: dict[str, str]  # WNID -> "tench, Tinca tinca"
    val_ids: tuple[int, ...] | None  # line n (1-based) -> ILSVRC2012_ID
    origin: str
    children: dict[str, tuple[str, ...]] | None = None  # inner synset WNID -> child WNIDs
    inner_words: dict[str, str] | None = None  # inner synset WNID -> words

    @property
    def wnids(self) -> list[str]:
        """The leaf WNIDs in label order (sorted)."""
        return sorted(self.wnid_of_id.values())

    def hierarchy(self) -> dict[str, object] | None:
        """The synset tree as stored in a prepared dataset's manifest (``children``: inner WNID ->
        child WNIDs; ``names``: inner WNID -> words), or ``None`` if meta.mat has no children."""
        if not self.children:
            return None
        return {"children": {k: list(v) for k, v in sorted(self.children.items())},
                "names": dict(sorted((self.inner_words or {}).items()))}  # fmt: skip


def find_devkit(root: Path) -> Path | None:
    """The devkit tarball or folder in ``root`` (or ``root`` itself when it is one)."""
    for candidate in (root / DEVKIT_TAR, root / DEVKIT_DIR, root / "devkit", root):
        if candidate.is_file() or (candidate / META).is_file():
            return candidate
    return None


def load_devkit(path: Path) -> Devkit:
    """Read ``meta.mat`` and the validation ground truth from a devkit tarball or folder."""
    if path.is_dir():
        meta = (path / META).read_bytes()
        gt_path = path / GROUND_TRUTH
        truth = gt_path.read_bytes() if gt_path.is_file() else None
    else:
        meta, truth = _read_from_tar(path)
    return parse_devkit(meta, truth, str(path))


def _read_from_tar(path: Path) -> tuple[bytes, bytes | None]:
    try:
        with tarfile.open(path, mode="r:*") as tar:
            found: dict[str, bytes] = {}
            for info in tar:
                for want in (META, GROUND_TRUTH):
                    if info.isreg() and (info.name == want or info.name.endswith("/" + want)):
                        f = tar.extractfile(info)
                        found[want] = f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read the devkit tarball ({e}); download it again") from None
    if META not in found:
        raise UserError(f"{path} has no {META}; is it ILSVRC2012_devkit_t12.tar.gz?")
    return found[META], found.get(GROUND_TRUTH)


def parse_devkit(meta: bytes, truth: bytes | None, origin: str) -> Devkit:
    """Parse ``meta.mat`` bytes (and the ground-truth text when given)."""
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy is a dependency
        raise UserError("reading the ILSVRC devkit needs scipy: pip install scipy") from None
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a damaged file
        raise UserError(f"{origin}: cannot read {META} ({type(e).__name__}: {e}); download the devkit again") from None
    names = synsets.dtype.names or ()
    need = ("ILSVRC2012_ID", "WNID", "words", "num_children")
    if not all(n in names for n in need):
        raise UserError(
            f"{origin}: {META} has no synsets struct with fields {', '.join(need)}; is it the ILSVRC2012 devkit?"
        )
    synsets = np.atleast_1d(synsets)
    wnid_of_id: dict[int, str] = {}
    words: dict[str, str] = {}
    inner: list[tuple[str, str, list[int]]] = []
    for s in synsets:
        if int(s["num_children"]) != 0:  # an inner WordNet node, not a class
            if "children" in names:
                kids = [int(c) for c in np.atleast_1d(s["children"]).ravel()]
                inner.append((str(s["WNID"]).strip(), str(s["words"]).strip(), kids))
            continue
        ident, wnid = int(s["ILSVRC2012_ID"]), str(s["WNID"]).strip()
        if ident in wnid_of_id or wnid in words:
            raise UserError(f"{origin}: {META} lists class {ident} / {wnid} twice; download the devkit again")
        wnid_of_id[ident] = wnid
        words[wnid] = str(s["words"]).strip()
    if not wnid_of_id:
        raise UserError(f"{origin}: {META} has no leaf synsets (num_children == 0)")
    val_ids = None
    if truth is not None:
        try:
            val_ids = tuple(int(line) for line in truth.decode("ascii").split())
        except (UnicodeDecodeError, ValueError):
            raise UserError(f"{origin}: {GROUND_TRUTH} is not a list of class IDs; download the devkit again") from None
        unknown = sorted(set(val_ids) - set(wnid_of_id))
        if unknown:
            raise UserError(f"{origin}: {GROUND_TRUTH} uses class IDs {unknown[:5]} that are no leaf classes in {META}")
    wnid_by_any_id = {int(s["ILSVRC2012_ID"]): str(s["WNID"]).strip() for s in synsets}
    children = {w: tuple(wnid_by_any_id[k] for k in kids if k in wnid_by_any_id) for w, _, kids in inner} or None
    inner_words = {w: text for w, text, _ in inner} or None
    return Devkit(wnid_of_id, words, val_ids, origin, children, inner_words)
