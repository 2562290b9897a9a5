"""Small datasets in each real layout, built in the tests (prepare, data, pipeline, report, baselines).

Every fixture knows the label each of its files must get and which files must be skipped, so
the tests can check every label, not a sample.
"""

from __future__ import annotations

import gzip
import io
import pickle
import random
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 40, 30  # tiny source images; the tests prepare them at --size 32


def picture(seed: int, w: int = W, h: int = H, mode: str = "RGB") -> Image.Image:
    """A small deterministic image with structure (gradient + a block), in ``mode``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, 3)
    rgb = np.stack([np.clip(base[c] // 2 + xx * (c + 1) * 2 + yy * (3 - c) * 2, 0, 255) for c in range(3)], -1).astype(
        np.uint8
    )
    rgb[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(0, 256, 3)
    img = Image.fromarray(rgb, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}) | kw)
    return buf.getvalue()


def jpeg(seed: int) -> bytes:
    return encode(picture(seed))


def cmyk_jpeg(seed: int) -> bytes:
    data = encode(picture(seed, mode="CMYK"))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    return data


def gray_jpeg(seed: int) -> bytes:
    data = encode(picture(seed, mode="L"))
    assert Image.open(io.BytesIO(data)).mode == "L"
    return data


def png_named_jpeg(seed: int) -> bytes:
    return encode(picture(seed), "PNG")


def truncated_jpeg(seed: int) -> bytes:
    data = jpeg(seed)
    return data[: len(data) // 2]


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ----------------------------------------------------------------------------- ILSVRC-2012

# Devkit order (ILSVRC2012_ID) differs from sorted-WNID order; two inner nodes sort first.
LEAVES = [  # (ILSVRC2012_ID, WNID, words)
    (1, "n02000002", "beta, second class"),
    (2, "n01000001", "alpha, first class"),
    (3, "n03000003", "gamma, third class"),
]
INNER = [(4, "n00000004", "entity", [1, 2, 3]), (5, "n00500005", "thing", [4])]
SORTED_WNIDS = sorted(w for _, w, _ in LEAVES)
LABEL = {w: i for i, w in enumerate(SORTED_WNIDS)}  # n01000001 -> 0, n02000002 -> 1, n03000003 -> 2
VAL_IDS = [2, 1, 3, 3, 1, 2, 3]  # ground truth, line n = image n


# Training images per class: name -> bytes; special cases spread over the classes.
def ilsvrc_train() -> dict[str, dict[str, bytes]]:
    return {
        "n01000001": {"n01000001_1.JPEG": jpeg(1), "n01000001_2.JPEG": png_named_jpeg(2), "n01000001_3.JPEG": jpeg(3)},
        "n02000002": {"n02000002_10.JPEG": cmyk_jpeg(10), "n02000002_11.JPEG": jpeg(11), "n02000002_12.JPEG": jpeg(12)},
        "n03000003": {"n03000003_7.JPEG": gray_jpeg(7), "n03000003_8.JPEG": truncated_jpeg(8), "n03000003_9.JPEG": jpeg(9),
                      "n03000003_5.JPEG": jpeg(5)},
    }  # fmt: skip


def ilsvrc_val() -> dict[str, bytes]:
    files = {f"ILSVRC2012_val_{n:08d}.JPEG": jpeg(100 + n) for n in range(1, 8)}
    files["ILSVRC2012_val_00000004.JPEG"] = truncated_jpeg(104)
    files["ILSVRC2012_val_00000006.JPEG"] = cmyk_jpeg(106)
    files["ILSVRC2012_val_00000009.JPEG"] = jpeg(109)  # beyond the ground truth: skipped
    return files


def expected_ilsvrc(hostile: bool = True) -> dict[str, dict[str, int]]:
    """key -> label of every file that must be stored."""
    train = {n[:-5]: LABEL[w] for w, files in ilsvrc_train().items() for n in files if n != "n03000003_8.JPEG"}
    if hostile:
        train.update({"n01000001_99": 0, "n01000001_98": 0})
    wnid_of_id = {i: w for i, w, _ in LEAVES}
    val = {f"ILSVRC2012_val_{n:08d}": LABEL[wnid_of_id[VAL_IDS[n - 1]]] for n in range(1, 8) if n != 4}
    return {"train": train, "val": val}


def meta_mat() -> bytes:
    import scipy.io

    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = [(i, w, words, 0, []) for i, w, words in LEAVES] + [(i, w, words, len(ch), ch) for i, w, words, ch in INNER]
    arr = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for k, (ident, wnid, words, nchild, children) in enumerate(rows):
        arr[k, 0] = (
            np.array([[ident]], dtype=np.uint16), np.array([wnid]), np.array([words]), np.array([f"gloss of {wnid}"]),
            np.array([[nchild]], dtype=np.uint8), np.array([children], dtype=np.uint16).reshape(1, -1),
            np.array([[0 if nchild == 0 else 1]], dtype=np.uint8), np.array([[1300 if nchild == 0 else 0]], dtype=np.uint16),
        )  # fmt: skip
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": arr})
    return buf.getvalue()


def ground_truth() -> bytes:
    return "".join(f"{i}\n" for i in VAL_IDS).encode()


def make_ilsvrc(root: Path, extracted: bool = False, hostile: bool = True) -> Path:
    """The official release in ``root`` (three tars), or extracted into folders."""
    root.mkdir(parents=True, exist_ok=True)
    train = ilsvrc_train()
    if hostile:  # member names that try to leave the output folder; the keys are their base names
        train["n01000001"]["../../n01000001_99.JPEG"] = jpeg(99)
        train["n01000001"]["/tmp/n01000001_98.JPEG"] = jpeg(98)
    if extracted:
        for wnid, files in train.items():
            (root / "train" / wnid).mkdir(parents=True)
            for name, data in files.items():
                (root / "train" / wnid / Path(name).name).write_bytes(data)
        (root / "val").mkdir()
        for name, data in ilsvrc_val().items():
            (root / "val" / name).write_bytes(data)
        (root / "ILSVRC2012_devkit_t12" / "data").mkdir(parents=True)
        (root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").write_bytes(meta_mat())
        (root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").write_bytes(ground_truth())
        return root
    inner = {f"{wnid}.tar": tar_bytes(files) for wnid, files in train.items()}
    (root / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes(inner))
    (root / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(ilsvrc_val()))
    devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": meta_mat(),
              "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": ground_truth()}  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in devkit.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(buf.getvalue())
    return root


# ----------------------------------------------------------------------------- Kaggle


def make_kaggle(root: Path) -> tuple[Path, dict[str, dict[str, int]]]:
    """The Kaggle folder; returns it and key -> label of what must be stored."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    words = {w: words for _, w, words in LEAVES}
    (root).mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {words[w]}\n" for w in SORTED_WNIDS))
    expected: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for k, wnid in enumerate(SORTED_WNIDS):
        (data / "train" / wnid).mkdir(parents=True)
        for n in range(3):
            (data / "train" / wnid / f"{wnid}_{n}.JPEG").write_bytes(
                gray_jpeg(n) if (k, n) == (1, 1) else jpeg(10 * k + n)
            )
            expected["train"][f"{wnid}_{n}"] = k
    (data / "val").mkdir(parents=True)
    (data / "test").mkdir(parents=True)
    (data / "test" / "ILSVRC2012_test_00000001.JPEG").write_bytes(jpeg(1))  # unlabelled, not used
    rows = []
    rng = random.Random(0)
    for n in range(1, 9):
        key = f"ILSVRC2012_val_{n:08d}"
        (data / "val" / f"{key}.JPEG").write_bytes(jpeg(200 + n))
        wnid = SORTED_WNIDS[rng.randrange(3)]
        if n != 5:  # image 5 has no row: skipped
            rows.append(f"{key},{wnid} 1 2 30 40 {wnid} 5 6 20 25")
            expected["val"][key] = LABEL[wnid]
    rng.shuffle(rows)  # not in file order
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    (root / "LOC_train_solution.csv").write_text("ImageId,PredictionString\n")
    return root, expected


# ----------------------------------------------------------------------------- folders


def make_folder(root: Path) -> tuple[Path, dict[str, dict[str, int]]]:
    """train/ and val/ class folders with a stray file and a non-image."""
    expected: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    classes = ["cat", "dog", "emu"]
    for split, n in (("train", 4), ("val", 2)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{i:03d}.jpg").write_bytes(jpeg(1000 + 10 * k + i))
                expected[split][f"{c}/{i:03d}"] = k
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "README.md").write_text("stray")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0")  # hidden: not an input
    return root, expected


def make_single_tree(root: Path, per_class: int = 10) -> Path:
    for k, c in enumerate(["a", "b"]):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"img{i}.png").write_bytes(encode(picture(3000 + 100 * k + i), "PNG"))
    return root


# ----------------------------------------------------------------------------- IDX, CIFAR


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08}[arr.dtype.type]
    return struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def make_idx(root: Path, n_train: int = 12, n_test: int = 5) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    labels = {}
    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_test, "val")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
        labels[split] = y.astype(np.int64)
    return root, labels


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(path: Path, per_batch: int = 6) -> tuple[Path, dict[str, dict[str, int]]]:
    """A cifar-10-python.tar.gz with two training batches and the test batch (protocol 2
    pickles with bytes keys, like the real Python 2 files)."""
    rng = np.random.default_rng(7)
    members: dict[str, bytes] = {}
    expected: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for batch, split in (("data_batch_1", "train"), ("data_batch_2", "train"), ("test_batch", "val")):
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        d = {b"batch_label": batch.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}  # fmt: skip
        members[f"cifar-10-batches-py/{batch}"] = pickle.dumps(d, protocol=2)
        expected[split].update({f"{batch}_{i:05d}": y for i, y in enumerate(labels)})
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}, protocol=2
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path, expected
