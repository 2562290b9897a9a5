"""`alexnet prepare` on small datasets in every real layout: labels, counts, skip reports,
statistics, determinism, safety, and the prepared-dataset reader."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.data.dataset import BatchPlan
from alexnet.data.prepare import Settings, prepare
from alexnet.data.prepared import PreparedDataset
from alexnet.data.sources import open_dataset
from alexnet.errors import UserError
from tests.helpers import layouts as fx

RAW = Settings(size=32, encoding="raw", shard_size=4)
JPEG = Settings(size=32, encoding="jpeg", shard_size=4)


def stored(out: Path, split: str) -> dict[str, int]:
    ds = PreparedDataset(out)
    return dict(zip(ds.keys(split), ds.labels(split).tolist()))


def check_accounting(manifest: dict, inputs: dict[str, int]) -> None:
    """Nothing silently dropped: stored + skipped == input files, per split."""
    for split, n in inputs.items():
        s = manifest["splits"][split]
        assert s["count"] + len(s["skipped"]) == s["inputs"] == n, (split, s["count"], s["skipped"], n)


def reasons(manifest: dict, split: str) -> dict[str, str]:
    return {s["key"]: s["reason"] for s in manifest["splits"][split]["skipped"]}


# ----------------------------------------------------------------------------- ILSVRC


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The release as tars, prepared (raw pixels, so statistics can be checked exactly)."""
    root = tmp_path_factory.mktemp("ilsvrc")
    src = fx.make_ilsvrc(root / "src")
    prepare(src, root / "out", settings=RAW, workers=2, progress=False)
    return src, root / "out"


def test_ilsvrc_tars_every_label_and_class(ilsvrc: tuple[Path, Path]) -> None:
    _, out = ilsvrc
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["layout"] == "ilsvrc"
    # Sorted-WNID order, names from meta.mat, inner (non-leaf) synsets ignored.
    assert [c["id"] for c in m["classes"]] == fx.SORTED_WNIDS
    assert [c["name"] for c in m["classes"]] == ["alpha, first class", "beta, second class", "gamma, third class"]
    expected = fx.expected_ilsvrc()
    for split in ("train", "val"):
        assert stored(out, split) == expected[split]
    # Devkit ID 2 is n01000001 = label 0 (not 1): the ID order is not the label order.
    assert stored(out, "val")["ILSVRC2012_val_00000001"] == 0
    check_accounting(m, {"train": 12, "val": 8})
    assert "truncated" in reasons(m, "train")["n03000003_8"]
    assert "truncated" in reasons(m, "val")["ILSVRC2012_val_00000004"]
    assert "no ground truth" in reasons(m, "val")["ILSVRC2012_val_00000009"]
    assert all(s["file"].startswith("ILSVRC2012_img_") for s in m["splits"]["train"]["skipped"])


def test_ilsvrc_statistics_match_a_direct_computation(ilsvrc: tuple[Path, Path]) -> None:
    _, out = ilsvrc
    ds = PreparedDataset(out)
    images, _ = ds.read("train", range(ds.num_samples("train")))
    x = images.permute(0, 2, 3, 1).numpy().astype(np.float64)  # N,S,S,3
    st = ds.manifest["statistics"]
    assert st["images"] == len(x) == 11
    np.testing.assert_allclose(np.load(out / "mean_image.npy"), x.mean(0), rtol=0, atol=1e-4)
    pixels = x.reshape(-1, 3)
    np.testing.assert_allclose(st["mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st["std"], pixels.std(0, ddof=1), rtol=1e-10)
    cov = np.cov(pixels, rowvar=False)
    np.testing.assert_allclose(st["covariance"], cov, rtol=1e-10)
    values, vectors = np.linalg.eigh(cov)
    np.testing.assert_allclose(st["eigenvalues"], values[::-1], rtol=1e-9)
    got = np.array(st["eigenvectors"])
    for k in range(3):  # same directions (up to sign), and A v = lambda v
        assert abs(abs(got[:, k] @ vectors[:, 2 - k]) - 1) < 1e-9
        np.testing.assert_allclose(cov @ got[:, k], st["eigenvalues"][k] * got[:, k], rtol=1e-8, atol=1e-8)
    # Exposed for the augmentation code:
    assert torch.allclose(ds.mean_image, torch.from_numpy(x.mean(0)).permute(2, 0, 1).float(), atol=1e-4)
    assert ds.eigenvalues.shape == (3,) and ds.eigenvectors.shape == (3, 3)
    assert ds.info.mean == tuple(st["mean"]) and ds.info.channels == 3 and ds.info.image_size == 32


def test_special_images_are_converted_correctly(ilsvrc: tuple[Path, Path]) -> None:
    """PNG named .JPEG, CMYK and grayscale JPEGs end as the right RGB pixels."""
    from PIL import Image

    _, out = ilsvrc
    ds = PreparedDataset(out)
    keys = ds.keys("train")
    images, _ = ds.read("train", range(len(keys)))
    by_key = {k: images[i].permute(1, 2, 0).numpy().astype(int) for i, k in enumerate(keys)}

    def reference(seed: int) -> np.ndarray:  # the picture, rescaled and cropped another way
        img = fx.picture(seed).resize((43, 32), Image.Resampling.BICUBIC).crop((5, 0, 37, 32))
        return np.asarray(img, dtype=int)

    assert np.abs(by_key["n01000001_2"] - reference(2)).mean() < 3  # PNG stored as .JPEG (lossless)
    assert np.abs(by_key["n01000001_1"] - reference(1)).mean() < 6  # an ordinary JPEG, for scale
    cmyk = by_key["n02000002_10"]  # through CMYK: colours survive, not inverted
    assert np.abs(cmyk - reference(10)).mean() < 8
    gray = by_key["n03000003_7"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    luma = np.asarray(fx.picture(7).convert("L").resize((43, 32), Image.Resampling.BICUBIC).crop((5, 0, 37, 32)), int)
    assert np.abs(gray[..., 0] - luma).mean() < 6


def test_tars_and_extracted_folders_give_identical_shards(ilsvrc: tuple[Path, Path], tmp_path: Path) -> None:
    _, out_tar = ilsvrc
    ext = fx.make_ilsvrc(tmp_path / "ext", extracted=True)
    out = tmp_path / "out"
    prepare(ext, out, settings=RAW, workers=1, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["layout"] == "ilsvrc"
    for split in ("train", "val"):
        assert stored(out, split) == fx.expected_ilsvrc()[split]
        for name in m["splits"][split]["shards"] + [f"{split}.index.npy", f"{split}.keys.txt"]:
            assert (out / name).read_bytes() == (out_tar / name).read_bytes(), name
    assert (out / "mean_image.npy").read_bytes() == (out_tar / "mean_image.npy").read_bytes()


def test_shards_are_webdataset_tars_with_safe_names(ilsvrc: tuple[Path, Path]) -> None:
    src, out = ilsvrc
    m = json.loads((out / "manifest.json").read_text())
    ds = PreparedDataset(out)
    names = []
    for shard in m["splits"]["train"]["shards"]:
        with tarfile.open(out / shard) as tar:
            for info in tar:
                names.append(info.name)
                assert not info.name.startswith("/") and ".." not in info.name and "/" not in info.name
                if info.name.endswith(".cls"):
                    key = info.name[:-4]
                    assert int(tar.extractfile(info).read().decode("ascii")) == stored(out, "train")[key]
    # the hostile members ("../../x", "/tmp/x") are stored under their base names only
    assert "n01000001_99.npy" in names and "n01000001_98.npy" in names
    assert not (src.parent / "n01000001_99.JPEG").exists() and not Path("/tmp/n01000001_98.JPEG").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "mean_image.npy"] + m["splits"]["train"]["shards"] + m["splits"]["val"]["shards"]
        + [f"{s}.{k}" for s in ("train", "val") for k in ("index.npy", "keys.txt")]
    )  # fmt: skip
    assert ds.read_bytes("train", 0) == (out / m["splits"]["train"]["shards"][0]).read_bytes()[512 : 512 + 3200]


def test_truncated_download_is_reported_and_the_rest_is_kept(tmp_path: Path) -> None:
    src = fx.make_ilsvrc(tmp_path / "src", hostile=False)
    train_tar = src / "ILSVRC2012_img_train.tar"
    with tarfile.open(train_tar) as tar:
        last = tar.getmembers()[-1]  # n03000003.tar: cut it in the middle of its second image
    with tarfile.open(fileobj=tar_member(train_tar, last)) as inner:
        first, second = inner.getmembers()[:2]
    data = train_tar.read_bytes()
    train_tar.write_bytes(data[: last.offset_data + second.offset_data + 100])
    m = prepare(src, tmp_path / "out", settings=RAW, workers=1, progress=False).manifest
    why = reasons(m, "train")
    assert "truncated download" in why["ILSVRC2012_img_train"] and "damaged per-class tar" in why["n03000003"]
    assert Path(first.name).stem in stored(tmp_path / "out", "train")  # the complete image before the cut is kept
    assert "truncated" in why[Path(second.name).stem]
    assert set(stored(tmp_path / "out", "train")) >= {
        k for k in fx.expected_ilsvrc(False)["train"] if k[:9] != "n03000003"
    }


def tar_member(path: Path, member: tarfile.TarInfo):  # type: ignore[no-untyped-def]
    import io

    with open(path, "rb") as f:
        f.seek(member.offset_data)
        return io.BytesIO(f.read(member.size))


def test_ilsvrc_val_without_devkit_is_a_clear_error(tmp_path: Path) -> None:
    src = fx.make_ilsvrc(tmp_path / "src")
    (src / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    with pytest.raises(UserError, match="devkit"):
        prepare(src, tmp_path / "out", settings=RAW, workers=1, progress=False)


# ----------------------------------------------------------------------------- Kaggle, folders, IDX, CIFAR


def test_kaggle_layout(tmp_path: Path) -> None:
    src, expected = fx.make_kaggle(tmp_path / "kaggle")
    r = prepare(src, tmp_path / "out", settings=JPEG, workers=1, progress=False)
    m = r.manifest
    assert m["source"]["layout"] == "kaggle"
    assert [c["id"] for c in m["classes"]] == fx.SORTED_WNIDS
    assert m["classes"][0]["name"] == "alpha, first class"
    for split in ("train", "val"):
        assert stored(tmp_path / "out", split) == expected[split]
    check_accounting(m, {"train": 9, "val": 8})
    assert "no row" in reasons(m, "val")["ILSVRC2012_val_00000005"]


def test_folder_layout_train_val(tmp_path: Path) -> None:
    src, expected = fx.make_folder(tmp_path / "pets")
    out = tmp_path / "out"
    r = prepare(src, out, settings=JPEG, workers=2, progress=False)
    m = r.manifest
    assert m["source"]["layout"] == "folder" and m["name"] == "pets"
    assert [c["id"] for c in m["classes"]] == ["cat", "dog", "emu"]
    for split in ("train", "val"):
        assert stored(out, split) == expected[split]
    check_accounting(m, {"train": 14, "val": 6})
    why = reasons(m, "train")
    assert "decode" in why["dog/notes"] and "class folder" in why["README"]
    # JPEG statistics: close to a direct computation on the decoded images (JPEG noise only).
    ds = open_dataset(str(out))
    assert isinstance(ds, PreparedDataset)
    images, _ = ds.read("train", range(ds.num_samples("train")))
    direct = images.double().mean((0, 2, 3)).numpy()
    assert np.abs(np.array(m["statistics"]["mean"]) - direct).max() < 1.0


def test_single_tree_val_fraction_is_deterministic(tmp_path: Path) -> None:
    src = fx.make_single_tree(tmp_path / "tree", per_class=10)
    a = prepare(src, tmp_path / "a", settings=JPEG, workers=1, val_fraction=0.3, progress=False).manifest
    prepare(src, tmp_path / "b", settings=JPEG, workers=2, val_fraction=0.3, progress=False)
    assert a["splits"]["val"]["count"] == 6 and a["splits"]["train"]["count"] == 14
    assert stored(tmp_path / "a", "val") == stored(tmp_path / "b", "val")
    val_keys = set(stored(tmp_path / "a", "val"))
    assert {k.split("/")[0] for k in val_keys} == {"a", "b"} and not val_keys & set(stored(tmp_path / "a", "train"))
    with pytest.raises(UserError, match="val-fraction"):
        prepare(fx.make_folder(tmp_path / "tv")[0], tmp_path / "c", val_fraction=0.2, progress=False)


def test_idx_layout(tmp_path: Path) -> None:
    src, labels = fx.make_idx(tmp_path / "fashion-mnist")
    out = tmp_path / "out"
    m = prepare(src, out, settings=JPEG, workers=1, progress=False).manifest
    assert m["source"]["layout"] == "idx" and m["name"] == "fashion-mnist"
    assert m["classes"][0] == {"id": "0", "name": "T-shirt/top"}
    for split in ("train", "val"):
        ds = PreparedDataset(out)
        assert ds.labels(split).tolist() == labels[split].tolist()
        assert ds.keys(split)[0] == ("train_00000" if split == "train" else "t10k_00000")
    check_accounting(m, {"train": 12, "val": 5})


def test_cifar_tarball(tmp_path: Path) -> None:
    src, expected = fx.make_cifar10(tmp_path / "dl" / "cifar-10-python.tar.gz")
    out = tmp_path / "out"
    m = prepare(src, out, settings=RAW, workers=1, progress=False).manifest  # SOURCE is the tarball itself
    assert m["source"]["layout"] == "cifar" and m["name"] == "cifar-10"
    assert [c["name"] for c in m["classes"]] == fx.CIFAR_NAMES
    for split in ("train", "val"):
        assert stored(out, split) == expected[split]
    check_accounting(m, {"train": 12, "val": 6})
    # pixels: 32x32 in, size 32 out: stored exactly
    import pickle
    import tarfile as tf

    with tf.open(src) as tar:
        batch = pickle.loads(tar.extractfile("cifar-10-batches-py/data_batch_1").read(), encoding="bytes")
    first = batch[b"data"][0].reshape(3, 32, 32)
    images, _ = PreparedDataset(out).read("train", [0])
    assert np.array_equal(images[0].numpy(), first)


def test_cifar100_extracted_folder(tmp_path: Path) -> None:
    import pickle

    folder = tmp_path / "downloads" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"class{i:02d}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in names]}, protocol=2))
    expected = {}
    for batch, split, n in (("train", "train", 5), ("test", "val", 3)):
        fine = [int(v) for v in rng.integers(0, 100, n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch_dict = {b"fine_labels": fine, b"coarse_labels": [0] * n, b"data": data}
        (folder / batch).write_bytes(pickle.dumps(batch_dict, protocol=5))  # numpy 2 pickles differ from 2009's
        expected[split] = {f"{batch}_{i:05d}": y for i, y in enumerate(fine)}
    m = prepare(tmp_path / "downloads", tmp_path / "out", settings=JPEG, workers=1, progress=False).manifest
    assert m["name"] == "cifar-100" and len(m["classes"]) == 100
    for split in ("train", "val"):
        assert stored(tmp_path / "out", split) == expected[split]


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    import os
    import pickle

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil()}, protocol=2))
    with pytest.raises(UserError, match="refusing"):
        prepare(folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- behaviour


def test_same_output_whatever_the_number_of_workers(tmp_path: Path) -> None:
    src, _ = fx.make_folder(tmp_path / "src")
    for w in (1, 2):
        prepare(src, tmp_path / f"w{w}", settings=Settings(size=32, shard_size=3), workers=w, progress=False)
    files = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "w2").iterdir())
    for name in files:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_rerun_is_a_noop_and_other_settings_are_refused(tmp_path: Path) -> None:
    src, _ = fx.make_folder(tmp_path / "src")
    out = tmp_path / "out"
    first = prepare(src, out, settings=JPEG, workers=1, progress=False)
    again = prepare(src, out, settings=JPEG, workers=1, progress=False)
    assert again.up_to_date and again.converted == 0 and again.manifest == first.manifest
    with pytest.raises(UserError, match="other inputs or settings"):
        prepare(src, out, settings=Settings(size=40), workers=1, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        prepare(src, tmp_path / "busy", progress=False)
    with pytest.raises(UserError, match="inside SOURCE"):
        prepare(src, src / "prepared", progress=False)


def test_unknown_layout_names_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        prepare(tmp_path / "empty", tmp_path / "out", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and all(name in msg for name in ("ilsvrc", "kaggle", "folder", "idx", "cifar"))
    with pytest.raises(UserError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="not in the kaggle layout"):
        prepare(fx.make_folder(tmp_path / "f")[0], tmp_path / "out", layout="kaggle", progress=False)


def test_reader_batches_follow_the_plan_with_and_without_workers(ilsvrc: tuple[Path, Path]) -> None:
    _, out = ilsvrc
    ds = PreparedDataset(out)
    assert ds.train_augment.crop == ds.eval_crop == 28 and ds.train_augment.pad == 0
    plan = BatchPlan(global_batch=4, shuffle=True, seed=3, epoch=1, drop_last=True)
    inline = list(ds.batches("train", plan))
    ds.workers = 2
    parallel = list(ds.batches("train", plan))
    assert len(inline) == len(parallel) == 2
    for (xa, ya), (xb, yb), idx in zip(inline, parallel, plan.local_indices(ds.num_samples("train"))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(ya, ds.labels("train")[idx]) and xa.dtype == torch.uint8 and xa.shape == (4, 3, 32, 32)
    resumed = list(ds.batches("train", BatchPlan(4, shuffle=True, seed=3, epoch=1, drop_last=True, start_step=1)))
    assert torch.equal(resumed[0][1], inline[1][1])


def test_open_dataset_on_a_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="alexnet prepare"):
        open_dataset(str(tmp_path))
