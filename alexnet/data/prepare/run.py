"""The ``prepare`` pipeline: list the source, convert shard by shard in parallel, finish.

1. A layout scanner lists every input (headers only for tars) with its key and label.
2. Each split's items are sorted by key and cut into shards of ``shard_size``; a shard is one
   task. Its digest covers the settings and exactly which inputs it holds.
3. Workers (a process pool) convert the images of a shard (or of a piece of one, when there
   are fewer shards than work for every core) and send back the encoded bytes and integer
   statistics. When all of a shard's images are in, the main process writes the shard tar and
   a sidecar (``OUT/.work/<shard>.npz``: index entries, skipped files, statistics), both to
   temporary names renamed into place: old sidecar removed, tar renamed, new sidecar written.
   A shard is done when its tar and a sidecar with the task's digest exist; a rerun skips
   it, so killing the run at any moment and running it again finishes only the missing work.
4. The main process merges the sidecars in shard order: split indexes, skipped lists, exact
   statistics, the mean image, and writes ``manifest.json`` last; then removes ``.work``.

Why workers ``pread`` the tars instead of the main process streaming them: listing the headers
of the 138 GB training tar takes about a minute and gives every image's offset; then any
worker reads any image directly, the work spreads over all cores without the main process
becoming a byte pump, and a resumed run never reads the shards that are already done.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageFile

from alexnet.data.dataset import MIN_CLASSES
from alexnet.data.prepare import manifest as mf
from alexnet.data.prepare.convert import ENCODINGS, EXTENSIONS, ConversionError, convert
from alexnet.data.prepare.items import SPLITS, ArrayRef, FileRef, Item, Skip, SourcePlan, TarRef
from alexnet.data.prepare.layout import scan
from alexnet.data.prepare.shards import ShardWriter, shard_name
from alexnet.data.prepare.stats import PartialStats, finish
from alexnet.data.prepare.tars import read_range
from alexnet.errors import UserError
from alexnet.io import MAX_IMAGE_BYTES, atomic_write, read_regular_file
from alexnet.runtime import default_workers as runtime_default_workers

WORK = ".work"


@dataclass(frozen=True)
class Settings:
    """What determines the output bytes (besides the inputs)."""

    size: int = 256
    encoding: str = "jpeg"
    quality: int = 90
    shard_size: int = 1000
    channels: int = 3  # 3: RGB (grey sources replicated), 1: grey (``--channels 1``)

    def identity(self) -> dict[str, Any]:
        """The settings as digests see them; the default channels are left out, so datasets
        prepared before ``--channels`` existed are still up to date."""
        fields = asdict(self)
        if fields["channels"] == 3:
            del fields["channels"]
        return fields

    def check(self) -> None:
        if not 8 <= self.size <= 4096:
            raise UserError(f"--size must be between 8 and 4096 pixels, got {self.size}")
        if self.encoding not in ENCODINGS:
            raise UserError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if not 1 <= self.quality <= 100:
            raise UserError(f"--quality must be between 1 and 100, got {self.quality}")
        if self.channels not in (1, 3):
            raise UserError(f"--channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if not 1 <= self.shard_size <= 1_000_000:
            raise UserError(f"--shard-size must be between 1 and 1000000 samples, got {self.shard_size}")


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    items: tuple[Item, ...]
    digest: str

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


@dataclass
class PrepareResult:
    """What a run did; ``manifest`` is the written manifest."""

    out: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    converted: int = 0  # images converted by this run (0 when everything was already done)
    shards_done_before: int = 0
    seconds: float = 0.0
    up_to_date: bool = False

    def count(self, split: str) -> int:
        return int(self.manifest["splits"][split]["count"])

    def skipped(self, split: str) -> list[dict[str, str]]:
        return list(self.manifest["splits"][split]["skipped"])


def default_workers() -> int:
    """One conversion process per available core (:func:`alexnet.runtime.default_workers`)."""
    return runtime_default_workers(limit=None)


# --------------------------------------------------------------------------- planning


def _ref_digest(ref: Any) -> str:
    """What identifies an input beside its origin (the path relative to SOURCE), so that a run
    can be resumed after SOURCE was mounted somewhere else."""
    if isinstance(ref, ArrayRef):
        return hashlib.blake2b(np.ascontiguousarray(ref.pixels).tobytes(), digest_size=8).hexdigest()
    if isinstance(ref, TarRef):
        return f"{ref.offset}+{ref.size}"
    return ""


def plan_shards(plan: SourcePlan, settings: Settings) -> list[ShardTask]:
    """Cut each split into shards; each task's digest names its settings and inputs."""
    tasks = []
    for split in SPLITS:
        items = plan.splits[split].items
        for index, start in enumerate(range(0, len(items), settings.shard_size)):
            chunk = tuple(items[start : start + settings.shard_size])
            h = hashlib.blake2b(repr((mf.VERSION, settings.identity(), split, index)).encode(), digest_size=16)
            for it in chunk:
                h.update(repr((it.key, it.label, it.origin, _ref_digest(it.ref))).encode())
            tasks.append(ShardTask(split, index, chunk, h.hexdigest()))
    return tasks


def settings_digest(plan: SourcePlan, settings: Settings, tasks: list[ShardTask]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((plan.layout, plan.name, plan.classes, settings.identity())).encode())
    for split in SPLITS:
        h.update(repr([tuple(s) for s in plan.splits[split].skipped]).encode())
    for t in tasks:
        h.update(t.digest.encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- workers

_progress: Any = None  # multiprocessing.Value in pool workers, a callable in-process
_fds: dict[str, int] = {}


def _init_worker(counter: Any) -> None:
    global _progress
    _progress = counter
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Pool.terminate() must stop a worker, whatever the parent set
    with contextlib.suppress(Exception):  # die with the main process (Linux)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("ignore")


def _tick(n: int = 1) -> None:
    if _progress is None:
        return
    if callable(_progress):
        _progress(n)
    else:
        with _progress.get_lock():
            _progress.value += n


def _read(ref: Any) -> bytes | np.ndarray:
    if isinstance(ref, ArrayRef):
        return ref.pixels
    if isinstance(ref, TarRef):
        data = read_range(ref.path, ref.offset, ref.size, _fds)
        if len(data) < ref.size:
            raise ConversionError(f"truncated: the tar ends {ref.size - len(data)} bytes into this file")
        return data
    try:  # the file may have been swapped for a FIFO or a device since the scan
        return read_regular_file(ref.path, MAX_IMAGE_BYTES)
    except UserError as e:
        raise ConversionError(str(e).removeprefix(f"{ref.path} ")) from None


def _read_order(item: Item) -> tuple[str, int]:
    ref = item.ref
    if isinstance(ref, TarRef):
        return (ref.path, ref.offset)
    return (ref.path, 0) if isinstance(ref, FileRef) else ("", 0)


def convert_items(
    items: tuple[Item, ...], settings: Settings, with_stats: bool
) -> tuple[list[bytes | str], dict[str, np.ndarray] | None]:
    """Convert ``items`` (read in storage order: sequential within a tar); for each, the
    encoded image or the reason it was skipped, and the integer statistics of the images."""
    results: list[bytes | str] = [""] * len(items)
    stats = PartialStats(settings.size, channels=settings.channels) if with_stats else None
    for i in sorted(range(len(items)), key=lambda i: _read_order(items[i])):
        item = items[i]
        try:
            encoded, pixels = convert(_read(item.ref), settings.size, settings.encoding, settings.quality,
                                      settings.channels)  # fmt: skip
        except ConversionError as e:
            results[i] = str(e)
        except OSError as e:
            results[i] = f"cannot read ({e.strerror or e})"
        except Exception as e:  # noqa: BLE001 - a damaged file can fail a decoder in odd ways: skip it, not the run
            results[i] = f"cannot decode ({type(e).__name__}: {e})"
        else:
            results[i] = encoded
            if stats is not None:
                stats.add(pixels)
        _tick()
    return results, stats.arrays() if stats is not None else None


def _convert_job(
    job: tuple[int, int, tuple[Item, ...], Settings, bool],
) -> tuple[int, int, list[bytes | str], dict[str, np.ndarray] | None]:
    shard, start, items, settings, with_stats = job
    return (shard, start, *convert_items(items, settings, with_stats))


def write_shard(
    out: Path, task: ShardTask, results: list[bytes | str], stats: PartialStats | None, settings: Settings
) -> None:
    """Write the shard tar and its sidecar so that a kill at any point is safe (see the module
    docstring): tar to a temporary name; old sidecar removed; tar renamed; new sidecar written."""
    rows: list[tuple[int, int, int]] = []
    keys: list[str] = []
    skipped: list[dict[str, str]] = []
    work = out / WORK
    tmp_tar = work / f"{task.name}.tmp.{os.getpid()}"
    try:
        with open(tmp_tar, "wb") as f:
            writer = ShardWriter(f, EXTENSIONS[settings.encoding])
            for item, res in zip(task.items, results):
                if isinstance(res, bytes):
                    offset, length = writer.add(item.key, item.label, res)
                    rows.append((offset, length, item.label))
                    keys.append(item.key)
                else:
                    skipped.append(Skip(item.key, item.origin, res).as_dict())
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        arrays: dict[str, np.ndarray] = {
            "index": np.array(rows, np.int64).reshape(-1, 3),
            "meta": np.array(json.dumps({"digest": task.digest, "keys": keys, "skipped": skipped})),
        }
        if stats is not None:
            arrays.update(stats.arrays())
        # A sidecar with digest d exists only if the tar in place was written for d.
        side = work / f"{task.name[:-4]}.npz"
        side.unlink(missing_ok=True)
        os.replace(tmp_tar, out / task.name)
        atomic_write(side, lambda f: np.savez(f, **arrays))
    except BaseException:
        tmp_tar.unlink(missing_ok=True)
        raise


def _load_sidecar(out: Path, task: ShardTask, full: bool = True) -> dict[str, Any] | None:
    """The sidecar of a finished shard (only its metadata unless ``full``), or None when the
    shard must be (re)made."""
    side = out / WORK / f"{task.name[:-4]}.npz"
    if not (out / task.name).is_file() or not side.is_file():
        return None
    try:
        with np.load(side, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("digest") != task.digest:
                return None
            data = {k: z[k] for k in z.files if k != "meta"} if full else {}
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError, zipfile.BadZipFile):
        return None
    data.update(meta)
    return data


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _lock(work: Path) -> Iterator[None]:
    with open(work / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(
                f"another `alexnet prepare` is writing to {work.parent}; wait for it or use another OUT"
            ) from None
        yield


def _check_out(source: Path, out: Path) -> None:
    src, dst = source.resolve(), out.resolve()
    if source.is_dir() and (dst == src or src in dst.parents):
        raise UserError(
            f"OUT ({out}) is inside SOURCE ({source}); it would be read as input; choose a folder outside it"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT ({out}) exists and is not a folder; choose a new folder")
    if out.is_dir() and not (out / mf.MANIFEST).exists() and not (out / WORK).is_dir() and any(out.iterdir()):
        raise UserError(f"OUT ({out}) is not empty and holds no prepared dataset; choose a new or empty folder")


def prepare(
    source: str | Path,
    out: str | Path,
    layout: str = "auto",
    settings: Settings | None = None,
    workers: int | None = None,
    val_fraction: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Prepare ``source`` into ``out`` (see the module docstring); returns what was done."""
    settings = settings or Settings()
    settings.check()
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    source, out = Path(source), Path(out)
    say = log or (lambda msg: None)
    _check_out(source, out)
    started = time.perf_counter()

    plan = scan(source, layout, val_fraction, progress=progress)
    if len(plan.classes) < 2:  # prepared anyway (features, statistics), but training refuses it
        say(f"warning: {source} has only {len(plan.classes)} class ({', '.join(n for _, n in plan.classes)}); "
            f"`alexnet train` needs at least {MIN_CLASSES}")
    tasks = plan_shards(plan, settings)
    digest = settings_digest(plan, settings, tasks)
    result = PrepareResult(out, {}, list(plan.notes))

    manifest_path = out / mf.MANIFEST
    if manifest_path.is_file():
        existing = mf.read_manifest(out)
        if existing.get("settings_digest") == digest:
            shutil.rmtree(out / WORK, ignore_errors=True)
            result.manifest, result.up_to_date = existing, True
            result.seconds = time.perf_counter() - started
            return result
        raise UserError(
            f"{out} already holds a prepared dataset made from other inputs or settings; choose a new OUT or delete it"
        )

    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with _lock(work):
            for stale in list(work.glob("*.tmp.*")) + list(out.glob("*.tmp.*")):
                stale.unlink(missing_ok=True)
            pending = [t for t in tasks if _load_sidecar(out, t, full=False) is None]
            result.shards_done_before = len(tasks) - len(pending)
            if result.shards_done_before:
                say(f"resuming: {result.shards_done_before} of {len(tasks)} shards already done")
            result.converted = _run_tasks(pending, out, settings, workers, progress)
            result.manifest = _finish(plan, settings, tasks, out, source, digest)
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e} ({getattr(e, 'filename', '') or out})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _chunk_size(pending: list[ShardTask], workers: int, shard_size: int) -> int:
    """Images per conversion job: whole shards when there are plenty, smaller pieces when there
    are too few shards to keep every worker busy (small sets, the tail of a resumed run)."""
    total = sum(len(t.items) for t in pending)
    return max(1, min(shard_size, -(-total // (4 * workers))))


def _run_tasks(pending: list[ShardTask], out: Path, settings: Settings, workers: int, progress: bool) -> int:
    """Convert the pending shards (in parallel) and write each as soon as all its images are
    converted; a progress bar shows images/s and the ETA. Returns the images converted."""
    from tqdm import tqdm

    total = sum(len(t.items) for t in pending)
    if not pending:
        return 0
    chunk = _chunk_size(pending, workers, settings.shard_size)
    jobs = [
        (n, start, t.items[start : start + chunk], settings, t.split == "train")
        for n, t in enumerate(pending)
        for start in range(0, len(t.items), chunk)
    ]
    results: dict[int, list[bytes | str]] = {}
    stats: dict[int, PartialStats | None] = {}
    left = {n: -(-len(t.items) // chunk) for n, t in enumerate(pending)}

    def collect(job_result: tuple[int, int, list[bytes | str], dict[str, np.ndarray] | None]) -> None:
        n, start, res, arrays = job_result
        task = pending[n]
        if n not in results:
            results[n] = [""] * len(task.items)
            stats[n] = PartialStats(settings.size, channels=settings.channels) if task.split == "train" else None
        results[n][start : start + len(res)] = res
        if arrays is not None:
            stats[n].merge(PartialStats.from_arrays(settings.size, arrays))  # type: ignore[union-attr]
        left[n] -= 1
        if left[n] == 0:
            write_shard(out, task, results.pop(n), stats.pop(n), settings)

    bar = tqdm(total=total, unit="img", desc="prepare", disable=not progress, smoothing=0.05, dynamic_ncols=True)
    global _progress
    workers = min(workers, len(jobs))
    try:
        if workers == 1:
            _progress = bar.update
            try:
                for job in jobs:
                    collect(_convert_job(job))
            finally:
                _progress = None
            return total
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        counter = ctx.Value("q", 0)
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(counter,))
        try:
            it = pool.imap_unordered(_convert_job, jobs)
            for _ in range(len(jobs)):
                while True:
                    try:
                        collect(it.next(timeout=0.2))
                        break
                    except mp.TimeoutError:
                        bar.update(counter.value - bar.n)
                bar.update(counter.value - bar.n)
        except BaseException:
            _kill_pool(pool)
            raise
        finally:
            pool.terminate()
        return total
    finally:
        bar.close()


def _kill_pool(pool: Any) -> None:
    """Stop the workers of a run being stopped (Ctrl-C, SIGTERM, an error) so that
    ``pool.terminate()`` cannot hang. A worker killed (SIGTERM sent to the whole process group)
    while it waited for a task, or while it sent a result, dies holding the task queue's read
    lock or the result queue's write lock, and ``terminate()`` takes both: it would wait forever.
    So stop the thread that replaces dead workers, kill every worker, wait for it, then free a
    lock a dead one still holds. (``_worker_handler``, ``_change_notifier``, ``_pool``,
    ``_inqueue._rlock`` and ``_outqueue._wlock`` are CPython's, unchanged since 3.8.)"""
    from multiprocessing.pool import TERMINATE

    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:  # as terminate() starts; else a fresh worker takes the lock freed below
        handler._state = TERMINATE
        pool._change_notifier.put(None)
        handler.join(timeout=5.0)
    workers = list(getattr(pool, "_pool", []))
    for p in workers:
        if p.exitcode is None:
            p.kill()
    for p in workers:
        p.join(timeout=5.0)
    locks = (getattr(getattr(pool, "_inqueue", None), "_rlock", None), getattr(getattr(pool, "_outqueue", None), "_wlock", None))
    for lock in locks:
        if lock is None:
            continue
        if lock.acquire(timeout=0.5):
            lock.release()
        else:
            with contextlib.suppress(ValueError):  # its holder is dead: nobody else will release it
                lock.release()


def _finish(
    plan: SourcePlan, settings: Settings, tasks: list[ShardTask], out: Path, source: Path, digest: str
) -> dict[str, Any]:
    """Merge the sidecars in shard order and write indexes, mean image and manifest (last)."""
    splits: dict[str, Any] = {}
    total = PartialStats(settings.size, channels=settings.channels)
    for split in SPLITS:
        split_tasks = [t for t in tasks if t.split == split]
        rows, keys, skipped = [], [], [tuple(s) for s in plan.splits[split].skipped]
        for t in split_tasks:
            side = _load_sidecar(out, t)
            if side is None:
                raise RuntimeError(f"shard {t.name} is missing after the run")
            index = side["index"]
            rows.append(np.column_stack([np.full(len(index), t.index, np.int64), index]))
            keys += side["keys"]
            skipped += [(s["key"], s["file"], s["reason"]) for s in side["skipped"]]
            if split == "train":
                total.merge(PartialStats.from_arrays(settings.size, side))
        table = np.concatenate(rows) if rows else np.zeros((0, 4), np.int64)
        atomic_write(out / mf.index_name(split), lambda f, a=table: np.save(f, a, allow_pickle=False))
        atomic_write(out / mf.keys_name(split), lambda f, k=keys: f.write("".join(x + "\n" for x in k).encode("utf-8")))
        skipped.sort()
        inputs = plan.splits[split].inputs
        if len(keys) + len(skipped) != inputs:  # every input is stored or reported, never lost
            raise RuntimeError(f"{split}: {len(keys)} stored + {len(skipped)} skipped != {inputs} inputs")
        splits[split] = {
            "count": len(keys),
            "inputs": inputs,
            "shards": [t.name for t in split_tasks],
            "index": mf.index_name(split),
            "keys": mf.keys_name(split),
            "skipped": [{"key": k, "file": f, "reason": r} for k, f, r in skipped],
        }
    finished = finish(total)
    statistics = None
    if finished is not None:
        statistics, mean_image = finished
        atomic_write(out / "mean_image.npy", lambda f: np.save(f, mean_image, allow_pickle=False))
    else:
        (out / "mean_image.npy").unlink(missing_ok=True)
    expected = {t.name for t in tasks}
    for stale in out.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if stale.name not in expected:
            stale.unlink()
    from alexnet import __version__

    manifest = {
        "format": mf.FORMAT,
        "version": mf.VERSION,
        "name": plan.name,
        "source": {"layout": plan.layout, "path": str(source.resolve())},
        "image_size": settings.size,
        "channels": settings.channels,
        "encoding": settings.encoding,
        "quality": settings.quality if settings.encoding == "jpeg" else None,
        "extension": EXTENSIONS[settings.encoding],
        "shard_size": settings.shard_size,
        "classes": [{"id": i, "name": n} for i, n in plan.classes],
        "splits": splits,
        "statistics": statistics,
        "settings_digest": digest,
        "created_by": f"alexnet {__version__}",
    }
    if plan.hierarchy:  # ILSVRC devkit: meta.mat's synset tree, for mistake severity in `alexnet report`
        manifest["hierarchy"] = plan.hierarchy
    atomic_write(out / mf.MANIFEST, lambda f: f.write(mf.dumps(manifest)))
    return manifest
