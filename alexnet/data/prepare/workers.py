"""The conversion workers of ``prepare``: a process pool whose jobs read a piece of a shard's
inputs (``pread`` on the tars, in storage order) and convert them, sending back the encoded
images and integer statistics; and how a stopped run kills the pool without hanging."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import ImageFile

from alexnet.data.prepare.convert import ConversionError, convert
from alexnet.data.prepare.items import ArrayRef, FileRef, Item, TarRef
from alexnet.data.prepare.plan import Settings
from alexnet.data.prepare.stats import PartialStats
from alexnet.data.prepare.tars import read_range
from alexnet.errors import UserError
from alexnet.io import MAX_IMAGE_BYTES, read_regular_file

_progress: Any = None  # multiprocessing.Value in pool workers, a callable in-process
_fds: dict[str, int] = {}


def init_worker(counter: Any) -> None:
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


def convert_job(
    job: tuple[int, int, tuple[Item, ...], Settings, bool],
) -> tuple[int, int, list[bytes | str], dict[str, np.ndarray] | None]:
    shard, start, items, settings, with_stats = job
    return (shard, start, *convert_items(items, settings, with_stats))


def count_in_process(callback: Callable[[int], object] | None) -> None:
    """Jobs run in this process (one worker) report their images to ``callback`` (None: to nobody)."""
    global _progress
    _progress = callback


def kill_pool(pool: Any) -> None:
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
