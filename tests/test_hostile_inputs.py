"""Hostile and damaged inputs, table by table, one table per command family: each case asserts
the exit code (2), the one-line message naming the cause, and that nothing was lost (the
folders involved are byte-for-byte as before). docs/promises.md says which promise each test
holds. Memory-hungry cases run in a child process under an address-space limit, and say how
much memory they used; the full disk is a 2 MB tmpfs (skipped where it cannot be mounted).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import models
from alexnet.cli import main
from alexnet.data.convention import InputConvention, InputNorm
from alexnet.errors import UserError
from alexnet.interop.runs import write_run
from alexnet.runfolder import run_folder_lock
from tests.helpers.cli import cli_main as cli
from tests.helpers.hostile import (
    BOUNDED_RSS,
    REPO,
    child,
    make_run,
    one_line_error,
    peak_rss,
    snapshot,
)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


# ============================================================ run folders: import, train, the lock


def _trained_run(folder: Path) -> None:
    make_run(folder)
    (folder / "checkpoints" / "best.pt").write_bytes((folder / "checkpoints" / "last.pt").read_bytes())
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (folder / "config.json").write_text(json.dumps({"config": {}, "resolved": {"lr": 0.01}}))


FOLDERS = {
    "trained run": (_trained_run, "already holds a trained run"),
    "baseline run": (lambda f: (f.mkdir(), (f / "config.json").write_text('{"kind": "alexnet-baseline"}')),
                     "already holds a baseline run"),
    "prepared dataset": (lambda f: (f.mkdir(), (f / "manifest.json").write_text("{}")), "already holds a prepared dataset"),
    "plain folder": (lambda f: (f.mkdir(), (f / "config.json").write_text("mine")), "already holds other files (config.json)"),
    "earlier import": (make_run, "pass --force to replace it"),
    "a FIFO for config.json": (lambda f: (f.mkdir(), os.mkfifo(f / "config.json")), "already holds other files (config.json)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", FOLDERS)
def test_import_never_writes_into_a_used_folder(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, message = FOLDERS[kind]
    out = tmp_path / "R"
    make(out)
    before = snapshot(out)
    # The refusal comes before the Caffe files are read: these need not exist.
    result = cli(capsys, "import", "caffe", str(tmp_path / "deploy.prototxt"), str(tmp_path / "w.caffemodel"), "--out", str(out))
    one_line_error(result, message)
    assert snapshot(out) == before
    if kind != "earlier import":  # --force replaces only an import, never anything else
        one_line_error(cli(capsys, "import", "caffe", "d.prototxt", "w.caffemodel", "--out", str(out), "--force"), message)
        assert snapshot(out) == before


def test_import_takes_the_lock_and_force_replaces_only_an_import(tmp_path: Path) -> None:
    out = make_run(tmp_path / "R")
    before = snapshot(out)
    model = models.create("alexnet-small", 4)
    args = ("alexnet-small", {}, ["a", "b", "c", "d"], InputConvention(3, 32, 28, InputNorm((0.0,) * 3, (1.0,) * 3)), "test", {"from": "again"})
    with run_folder_lock(out), pytest.raises(UserError, match="in use by another alexnet process"):
        write_run(out, model, *args, force=True)  # `alexnet train --out R` holds R: the import waits for nobody
    assert snapshot(out) == before
    write_run(out, model, *args, force=True)
    assert json.loads((out / "config.json").read_text())["imported"] == {"from": "again"}


def test_train_never_starts_in_a_baseline_run_or_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("baseline run", "prepared dataset"):
        make, message = FOLDERS[kind]
        out = tmp_path / kind.replace(" ", "-")
        make(out)
        before = snapshot(out)
        result = cli(capsys, "train", "--data", "synthetic:classes=2,size=28,train=16,val=8", "--epochs", "1",
                     "--batch-size", "8", "--no-progress", "--out", str(out))  # fmt: skip
        one_line_error(result, message)
        assert snapshot(out) == before


# ============================================================ prepare: FIFOs, symlink loops, SIGTERM


def _class_tree(root: Path, per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_prepare_skips_and_names_a_fifo_and_a_symlink_loop(tmp_path: Path) -> None:
    src, out = tmp_path / "s", tmp_path / "out"
    _class_tree(src)
    os.mkfifo(src / "cat" / "fifo.jpg")  # opening it would wait for a writer forever
    (src / "dog" / "loop").symlink_to("..")  # dog/loop/cat/..., dog/loop/dog/loop/...
    (src / "dog" / "twin").symlink_to(src / "cat")  # the cat images again, as dogs
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "alexnet", "prepare", str(src), str(out), "--size", "32", "--workers", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=120, cwd=REPO, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60
    for name in ("cat/fifo.jpg: not a regular file (a FIFO)", "dog/loop: symlink loop", "dog/twin: symlink loop"):
        assert f"skipped {name}" in proc.stdout, proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["splits"][s]["count"] for s in ("train", "val")) == 12  # 12 images, not 493

    from alexnet.data import open_dataset

    ds = open_dataset(str(out))
    labels = torch.cat([ds.read(s, torch.arange(ds.num_samples(s)))[1] for s in ("train", "val")])
    assert torch.bincount(labels).tolist() == [6, 6]  # no cat stored as a dog


def test_a_file_swapped_for_a_fifo_after_the_scan_is_skipped_not_waited_on(tmp_path: Path) -> None:
    from alexnet.data.prepare.convert import ConversionError
    from alexnet.data.prepare.items import FileRef
    from alexnet.data.prepare.workers import _read

    os.mkfifo(tmp_path / "late.jpg")
    with pytest.raises(ConversionError, match="not a regular file"):
        _read(FileRef(str(tmp_path / "late.jpg")))


def test_sigterm_to_the_process_group_stops_a_pool_with_a_stuck_worker(tmp_path: Path) -> None:
    """Idle workers die holding the task queue's lock; the main process must still exit."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp, signal, sys, time
        from alexnet.data.prepare.workers import init_worker, kill_pool

        def job(i):
            if i == 0:
                time.sleep(600)  # a worker stuck on one input
            return i

        class Stopped(Exception):
            pass

        def stop(*_):
            raise Stopped

        signal.signal(signal.SIGTERM, stop)
        pool = mp.get_context("fork").Pool(2, initializer=init_worker, initargs=(None,))
        try:
            try:
                it = pool.imap_unordered(job, range(4))
                while True:
                    try:
                        print(it.next(timeout=0.2), flush=True)
                    except mp.TimeoutError:
                        pass
            except BaseException:
                kill_pool(pool)
                raise
            finally:
                pool.terminate()
        except Stopped:
            print("stopped", flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline().strip() for _ in range(3)]  # the other jobs are done: workers idle
        assert sorted(seen) == ["1", "2", "3"]
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ============================================================ features: a full disk


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a 2 MB tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_features_on_a_full_disk_is_one_line_and_leaves_nothing(tiny_disk: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run = make_run(tmp_path / "run")
    data = "synthetic:classes=4,size=28,train={n},val=8,channels=3"
    kept = tiny_disk / "kept.npy"
    kept.write_bytes(b"an earlier file")
    # 1000 x 1024 float32 = 4 MB: more than the disk holds (SIGBUS before the space was reserved)
    result = cli(capsys, "features", str(run), "--data", data.format(n=1000), "--out", str(tiny_disk / "f.npy"), "--no-progress")
    one_line_error(result, "f.npy: No space left on device")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["kept.npy"]  # no half file, no hidden temp file
    assert kept.read_bytes() == b"an earlier file"
    code, _, err = cli(capsys, "features", str(run), "--data", data.format(n=40), "--out", str(tiny_disk / "f.npy"), "--no-progress")
    assert code == 0, err
    mode = (tiny_disk / "kept.npy").stat().st_mode & 0o777  # what open() gives any file here (the umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in tiny_disk.iterdir()} == {"kept.npy": mode, "f.npy": mode,
                                                                               "f.labels.npy": mode}  # fmt: skip


# ============================================================ checkpoints and ONNX metadata


def _edited_checkpoint(run: Path, out: Path, edit: object) -> Path:
    raw = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    edit(raw)  # type: ignore[operator]
    torch.save(raw, out)
    return out


def _set(*path: str, value: object) -> object:
    def edit(d: dict) -> None:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return edit


def _data(**fields: object) -> object:
    """An edit of the data settings, made alike in the flat fields and the input convention record."""
    return lambda d: (d["data"].update(fields), d["data"]["convention"].update(fields))


CHECKPOINTS = {
    "10^9 classes, no names": (lambda d: (_set("num_classes", value=10**9)(d), _set("classes", value=[])(d)),
                               "num_classes is 1000000000"),
    "image_size 10^6": (_data(image_size=10**6), "image_size is 1000000"),
    "crop larger than the image": (_data(crop=64), "crop is 64"),
    "2-channel normalisation, 3-channel net": (_data(channels=2, mean=[1.0, 2.0], std=[1.0, 1.0]), "does not take the 2-channel"),
    "mean not finite": (_data(mean=[float("nan"), 1.0, 1.0]), "not finite"),
    "std zero": (_data(std=[0.0, 1.0, 1.0]), "std"),
    "the record disagrees with the fields": (_set("data", "crop", value=24), "data.convention disagrees"),
}  # fmt: skip


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_hostile_checkpoint_is_one_line(case: str, tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit, message = CHECKPOINTS[case]
    ckpt = _edited_checkpoint(make_run(tmp_path / "run"), tmp_path / "hostile.pt", edit)
    for command in (("predict", str(ckpt), str(image)), ("eval", str(ckpt), "--data", "synthetic")):
        one_line_error(cli(capsys, *command), message)


def test_a_checkpoint_of_a_billion_classes_costs_no_memory(tmp_path: Path, image: Path) -> None:
    ckpt = _edited_checkpoint(make_run(tmp_path / "run"), tmp_path / "huge.pt", CHECKPOINTS["10^9 classes, no names"][0])
    proc = child(f"""
        import sys
        from alexnet.cli import main
        code = main(["predict", {str(ckpt)!r}, {str(image)!r}])
        print(code)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2] == "2" and "num_classes is 1000000000" in proc.stderr
    assert peak_rss(proc) < BOUNDED_RSS


def test_hostile_onnx_metadata_is_one_line_naming_the_file(tmp_path: Path, image: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from alexnet.interop.onnx_model import METADATA_KEY

    exported = tmp_path / "model.onnx"
    code, _, err = cli(capsys, "export", str(make_run(tmp_path / "run")), "--out", str(exported))
    assert code == 0, err
    good = next(p.value for p in onnx.load(str(exported)).metadata_props if p.key == METADATA_KEY)
    huge = json.dumps({**json.loads(good), "image_size": 10**6})
    for name, text, message in (("huge.onnx", huge, "image_size is 1000000"), ("garbage.onnx", "{not json", "unreadable")):
        model = onnx.load(str(exported))
        next(p for p in model.metadata_props if p.key == METADATA_KEY).value = text
        onnx.save(model, str(tmp_path / name))
        line = one_line_error(cli(capsys, "predict", str(tmp_path / name), str(image)), message)
        assert name in line


# ============================================================ CIFAR tarballs and pickles


def _cifar_tarball(path: Path, extra: dict[str, bytes]) -> Path:
    rng = np.random.default_rng(0)

    def batch(n: int) -> bytes:
        return pickle.dumps({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]})

    members = {"batches.meta": pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}),
               "data_batch_1": batch(20), "test_batch": batch(10), **extra}  # fmt: skip
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar_reads_only_bounded_batch_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alexnet.data.prepare import cifar

    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 1 << 20)  # the real bound is 256 MB; the same code path
    ok = _cifar_tarball(tmp_path / "ok" / "cifar-10-python.tar.gz", {"junk": bytes(3 << 20)})  # not a batch: never read
    assert sum(len(b[2]) for b in cifar.read_batches(ok).splits["train"]) == 20
    big = _cifar_tarball(tmp_path / "big" / "cifar-10-python.tar.gz", {"data_batch_2": bytes(2 << 20)})
    with pytest.raises(UserError, match="data_batch_2 is 2 MB, more than any CIFAR batch"):
        cifar.read_batches(big)


@pytest.mark.parametrize("payload", [
    b"\x80\x02cbuiltins\nbytearray\nJ\x00\x2f\x68\x59\x85R.",  # bytearray(1.5e9): 32 bytes asking for 1.5 GB
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xe1\xf5\x05\x85c_codecs\nencode\n"
     b"X\x01\x00\x00\x00bX\x06\x00\x00\x00latin1\x86R\x87R."),  # an array of 10^8 made by shape alone
])  # fmt: skip
def test_cifar_unpickler_allocates_nothing_a_pickle_asks_for(payload: bytes) -> None:
    from alexnet.data.prepare.cifar import load_batch

    with pytest.raises(UserError, match="refusing"):
        load_batch(payload, "evil")


# ============================================================ flags: serve, train, experiment


FLAGS = {
    "serve --port 99999": (["serve", "R", "--port", "99999"], "expected a number from 1 to 65535"),
    "serve --port 0": (["serve", "R", "--port", "0"], "expected a number >= 1"),
    "serve --max-body-mb nan": (["serve", "R", "--max-body-mb", "nan"], "expected a finite number"),
    "serve --max-body-mb inf": (["serve", "R", "--max-body-mb", "inf"], "expected a finite number"),
    "serve --max-body-mb -1": (["serve", "R", "--max-body-mb", "-1"], "expected a number in (0, 1024]"),
    "serve --host 256.1.1.1": (["serve", "R", "--host", "256.1.1.1"], "--host 256.1.1.1 is not an address"),
    "serve --host 192.0.2.1": (["serve", "R", "--host", "192.0.2.1"], "cannot listen on 192.0.2.1"),
    "train --lr inf": (["train", "--data", "synthetic", "--lr", "inf"], "lr must be > 0 and finite"),
    "train --lr abc": (["train", "--data", "synthetic", "--lr", "abc"], "lr must be > 0 and finite, or auto; got 'abc'"),
    "train --momentum nan": (["train", "--data", "synthetic", "--momentum", "nan"], "expected a finite number"),
    "experiment --threshold nan": (["experiment", "relu-vs-tanh", "--threshold", "nan", "--plan"], "finite"),
    "experiment --threshold -1": (["experiment", "relu-vs-tanh", "--threshold", "-1", "--plan"], "expected a number in (0,"),
    "experiment --threshold 5": (["experiment", "relu-vs-tanh", "--threshold", "5", "--plan"], "fraction in (0, 1)"),
    "train --pretrained-lr-scale inf": (["train", "--data", "synthetic", "--pretrained-lr-scale", "inf"], "finite"),
    "baseline --l2 inf": (["baseline", "--features", "raw", "--l2", "inf", "--data", "synthetic"], "finite"),
    "bench data --seconds nan": (["bench", "data", "--seconds", "nan"], "expected a finite number"),
    "bench serve --max-seconds -1": (["bench", "serve", "--max-seconds", "-1"], "expected a number in (0, 86400]"),
}  # fmt: skip


@pytest.mark.parametrize("case", FLAGS)
def test_bad_flag_is_one_line(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    args, message = FLAGS[case]
    one_line_error(cli(capsys, *args), message)
    assert "listening" not in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_one_line_before_the_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(cli(capsys, "serve", "no-such-run", "--port", str(port)), f"cannot listen on 127.0.0.1 port {port}")


# ============================================================ baseline run files


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baseline") / "run"
    assert main(["baseline", "--features", "raw", "--data", BASELINE_DATA, "--out", str(out), "--no-progress"]) == 0
    return out


BASELINE_DATA = "synthetic:classes=4,size=16,train=64,val=32,channels=1"


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


BASELINE_FILES = {  # file -> new content (None: truncate to a third), message
    "truncated classifier.npz": ("classifier.npz", None, "classifier.npz is not a readable .npz file"),
    "truncated extractor.npz": ("extractor.npz", None, "extractor.npz is not a readable .npz file"),
    "garbage stages.json": ("stages.json", b"garbage", "stages.json is damaged"),
    "empty stages.json": ("stages.json", b"{}", "stages.json is damaged"),
    "config.json without settings": ("config.json", b'{"kind": "alexnet-baseline", "format_version": 1}', "config.json is damaged"),
    "extractor.json not an object": ("extractor.json", b"[1]", "extractor.json is damaged"),
    "classifier of another shape": ("classifier.npz", _npz(weight=np.zeros((3, 7), np.float32), bias=np.zeros(3, np.float32)),
                                    "classifier.npz is damaged"),
}  # fmt: skip


@pytest.mark.parametrize("case", BASELINE_FILES)
def test_damaged_baseline_run_is_one_line(case: str, baseline_run: Path, tmp_path: Path, image: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import shutil

    name, content, message = BASELINE_FILES[case]
    run = tmp_path / "run"
    shutil.copytree(baseline_run, run)
    path = run / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3] if content is None else content)
    before = snapshot(run)
    commands = [("eval", str(run)), ("predict", str(run), str(image)),
                ("baseline", "--features", "raw", "--data", BASELINE_DATA, "--out", str(run), "--no-progress")]  # fmt: skip
    for command in commands:
        if command[0] != "baseline" and name == "stages.json":
            assert cli(capsys, *command)[0] == 0  # eval and predict do not need the timings
            continue
        rerun_of_other_settings = command[0] == "baseline" and name == "config.json"  # its settings are what is gone
        one_line_error(cli(capsys, *command), "holds a baseline with other settings" if rerun_of_other_settings else message)
    assert snapshot(run) == before


# ============================================================ prototxt, predict's inputs


def test_deeply_nested_prototxt_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "deep.prototxt"
    deep.write_text('name: "x"\n' + "layer {" * 5000 + "}" * 5000)
    one_line_error(cli(capsys, "import", "caffe", str(deep), str(tmp_path / "w.caffemodel"), "--out", str(tmp_path / "R")),
                   "nests messages more than 64 deep")  # fmt: skip
    assert not (tmp_path / "R").exists()


def test_predict_refuses_devices_fifos_and_endless_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import importlib

    predict_module = importlib.import_module("alexnet.data.images")

    run = make_run(tmp_path / "run")
    os.mkfifo(tmp_path / "fifo.png")
    for source in ("/dev/zero", str(tmp_path / "fifo.png")):
        one_line_error(cli(capsys, "predict", str(run), source), "not a regular file")

    class Zeros(io.RawIOBase):  # /dev/zero on standard input: endless
        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            b[:] = bytes(len(b))
            return len(b)

    monkeypatch.setattr(predict_module, "MAX_IMAGE_BYTES", 1 << 20)  # the real cap is 64 MB; the same code path
    with pytest.raises(UserError, match="standard input is larger than 1 MB"):
        predict_module.read_image_bytes("-", io.BufferedReader(Zeros()))


def test_endless_stdin_costs_bounded_memory(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    with open("/dev/zero", "rb") as zeros:
        proc = child(f"""
            from alexnet.cli import main
            print(main(["predict", {str(run)!r}, "-"]))
        """, stdin=zeros)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2] == "2" and "standard input is larger than 64 MB" in proc.stderr, proc.stderr
    assert peak_rss(proc) < BOUNDED_RSS


# ============================================================ messages that used to mislead


def test_features_on_a_read_only_disk_names_the_file_asked_for(tiny_disk: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run = make_run(tmp_path / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    line = one_line_error(cli(capsys, "features", str(run), "--data", "synthetic:classes=4,size=28,train=8,val=8,channels=3",
                              "--out", str(tiny_disk / "f.npy"), "--no-progress"), "read-only")  # fmt: skip
    assert f"{tiny_disk / 'f.npy'}:" in line and ".tmp" not in line


def test_misleading_messages_now_say_what_is_wrong(baseline_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "afile.txt").write_text("not a folder")
    (tmp_path / "demo" / "checkpoints").mkdir(parents=True)
    (tmp_path / "demo" / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "pruned" / "checkpoints").mkdir(parents=True)
    (tmp_path / "pruned" / "checkpoints" / "step-00000200.pt").write_bytes(b"")
    (tmp_path / "unfinished" / ".work").mkdir(parents=True)
    run, b = str(make_run(tmp_path / "run")), str(baseline_run)
    cases = [
        (["export", run, "--out", str(tmp_path / "afile.txt" / "model.onnx")], "afile.txt is a file, not a folder"),
        (["export", b, "--out", str(tmp_path / "m.onnx")], "is a baseline run (no network)"),
        (["features", b, "--out", str(tmp_path / "f.npy")], "is a baseline run (no network)"),
        (["similar", b, str(tmp_path / "afile.txt")], "is a baseline run (no network)"),
        (["eval", b, "--ten-crop"], "drop --ten-crop"),
        (["demo", "--out", str(tmp_path / "demo")], "already holds a demo run; choose another --out"),
        (["train", "--resume", str(tmp_path / "pruned" / "checkpoints" / "step-00000100.pt")],
         "step checkpoints kept: step-00000200.pt"),
        (["train", "--data", str(tmp_path / "unfinished"), "--out", str(tmp_path / "t")],
         "unfinished `alexnet prepare` output"),
    ]  # fmt: skip
    for args, message in cases:
        line = one_line_error(cli(capsys, *args), message)
        assert "--resume" not in line or args[0] == "train"
    assert not (tmp_path / "t").exists()


def test_landmarks_beyond_the_training_set_are_recorded_as_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rbf"
    code, _, err = cli(capsys, "baseline", "--features", "hog-rbf", "--landmarks", "100000", "--data", BASELINE_DATA,
                       "--out", str(out), "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "--landmarks 100000 is more than the 64 training images; using 64" in err
    assert json.loads((out / "config.json").read_text())["settings"]["landmarks"] == 64  # not 100000
    assert json.loads((out / "extractor.json").read_text())["landmarks"] == 64


def test_predict_on_a_folder_names_each_bad_image_and_answers_the_others(tmp_path: Path, image: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        (folder / name).write_bytes(image.read_bytes())
    (folder / "b.png").write_text("not an image")
    code, out, err = cli(capsys, "predict", str(make_run(tmp_path / "run")), str(folder), "--topk", "1")
    assert code == 2
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [str(folder / "a.png"), str(folder / "c.png")]
    assert err.strip().splitlines() == [(f"alexnet: error: cannot read image {folder / 'b.png'}: "
                                         "cannot decode: not an image file in a format Pillow reads")]  # fmt: skip


def test_serve_takes_an_exported_onnx_like_predict_and_names_no_folder(tmp_path: Path, image: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    from alexnet.serving.app import ServeConfig, ServedModel

    run, exported = make_run(tmp_path / "run"), tmp_path / "model.onnx"
    assert cli(capsys, "export", str(run), "--out", str(exported))[0] == 0
    served = ServedModel(ServeConfig(source=str(exported)))
    assert served.info()["source"] == "model.onnx" and served.info()["num_classes"] == 4
    batch = served.decode(image.read_bytes(), "photo.png").unsqueeze(0)
    got = [p["class"] for p in served.topk(batch, 2)[0]]
    code, out, _ = cli(capsys, "predict", str(exported), str(image), "--topk", "2", "--json")
    assert code == 0 and got == [p["class"] for p in json.loads(out)[0]["predictions"]]
    assert ServedModel(ServeConfig(source=str(run))).info()["source"] == "run"  # not /tmp/.../run


def test_kaggle_layout_skips_and_names_what_is_not_a_file(tmp_path: Path) -> None:
    from alexnet.data.prepare.kaggle import DATA, MAPPING
    from alexnet.data.prepare.layout import scan

    (tmp_path / MAPPING).write_text("n01 cat\nn02 dog\n")
    for wnid in ("n01", "n02"):
        folder = tmp_path / DATA / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(folder / f"{wnid}_{i}.JPEG")
    os.mkfifo(tmp_path / DATA / "train" / "n01" / "n01_fifo.JPEG")
    (tmp_path / DATA / "train" / "n02" / "loop").symlink_to("..")
    plan = scan(tmp_path, "kaggle")
    train = plan.splits["train"]
    assert len(train.items) == 6
    reasons = {s.origin: s.reason for s in train.skipped}
    assert reasons[f"{DATA.as_posix()}/train/n01/n01_fifo.JPEG"].startswith("not a regular file (a FIFO)")
    assert reasons[f"{DATA.as_posix()}/train/n02/loop"].startswith("symlink loop")


def test_a_request_uvicorn_cannot_parse_gets_the_api_json_400(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    run = make_run(tmp_path / "run")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", str(run), "--port", str(port), "--device", "cpu"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None and "Ctrl-C stops" in server.stdout.readline()
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with conn:
            conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
        assert "error" in json.loads(body)
    finally:
        server.terminate()
        server.wait(timeout=30)
