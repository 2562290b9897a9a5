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
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageFile

from alexnet.data.dataset import MIN_CLASSES
from alexnet.data.prepare import manifest as mf
from alexnet.data.prepare.convert import EXTENSIONS
from alexnet.data.prepare.items import SPLITS, Skip, SourcePlan
from alexnet.data.prepare.layout import scan
from alexnet.data.prepare.plan import WORK, Settings, ShardTask, plan_shards, settings_digest
from alexnet.data.prepare.shards import ShardWriter
from alexnet.data.prepare.stats import PartialStats, finish
from alexnet.data.prepare.workers import convert_job, count_in_process, init_worker, kill_pool
from alexnet.errors import UserError
from alexnet.io import atomic_write
from alexnet.runtime import default_workers as runtime_default_workers


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
    workers = min(workers, len(jobs))
    try:
        if workers == 1:
            count_in_process(bar.update)
            try:
                for job in jobs:
                    collect(convert_job(job))
            finally:
                count_in_process(None)
            return total
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        counter = ctx.Value("q", 0)
        pool = ctx.Pool(workers, initializer=init_worker, initargs=(counter,))
        try:
            it = pool.imap_unordered(convert_job, jobs)
            for _ in range(len(jobs)):
                while True:
                    try:
                        collect(it.next(timeout=0.2))
                        break
                    except mp.TimeoutError:
                        bar.update(counter.value - bar.n)
                bar.update(counter.value - bar.n)
        except BaseException:
            kill_pool(pool)
            raise
        finally:
            pool.terminate()
        return total
    finally:
        bar.close()


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
