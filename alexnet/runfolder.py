"""The run folder: its file names, reading and writing its config and metrics, what kind of run
it holds, and its one writer (an exclusive lock that every writing command takes).

A network run (``alexnet train``, ``demo``) holds ``config.json``, ``metrics.jsonl`` (one record
per epoch) and ``checkpoints/`` (``last.pt``, ``best.pt``, step checkpoints); an imported run
(``alexnet import``) the same checkpoint and a ``config.json`` with ``imported``; a baseline run
(``alexnet baseline``) a ``config.json`` of kind :data:`BASELINE_KIND` and ``metrics.json``.

Without it, two ``alexnet train --out X`` started side by side would both run and both exit 0,
the second silently overwriting the first run's metrics and checkpoints. Every command that writes a run
folder (train, resume, demo, baselines, experiments, reports) holds :func:`run_folder_lock` while
it writes. The lock is ``flock`` on ``RUN/.alexnet.lock``: the kernel drops it when the process
ends in any way (SIGKILL included), so a killed run never leaves a stale lock behind and
``--resume`` needs no clean-up. The file holds the owner's pid for the error message; it is
never deleted (unlinking a lock file lets two processes lock two different inodes).

Under ``torchrun`` the ranks share one folder and only rank 0 writes: rank 0 takes the lock
(``take=True``) and all ranks learn the outcome through ``agree`` (an OR over ranks), so every
rank stops with the same one-line error instead of waiting in a collective for a dead rank 0.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from alexnet.errors import UserError
from alexnet.io import atomic_write_json, atomic_write_text, read_regular_file

LOCK_NAME = ".alexnet.lock"
CONFIG, METRICS, CHECKPOINTS = "config.json", "metrics.jsonl", "checkpoints"
BASELINE_METRICS = "metrics.json"  # a baseline's one record (it has no epochs)
LAST, BEST = "last.pt", "best.pt"  # in CHECKPOINTS: the newest state (replaced atomically), the best epoch's
_CONFIG_LIMIT = 1 << 20  # a config is a few KB; a huge file or a FIFO in its place is not read (nor waited on)
_STEP_FILE = re.compile(r"^step-(\d{8,})\.pt$")  # step_file_name's
RunKind = Literal["network", "baseline", "imported"]
NETWORK, BASELINE, IMPORTED = "network", "baseline", "imported"  # run_kind's answers
BASELINE_KIND = "alexnet-baseline"  # config.json's "kind" in a baseline run folder (alexnet.baselines)
IMPORTED_KEY = "imported"  # config.json's record of where an imported run's weights came from (alexnet.interop)
# What a folder holds, in folder_contents' words (refusals quote them).
TRAINED_RUN, IMPORTED_RUN = "a trained run", "an imported run"  # alexnet train; alexnet.interop.runs.write_run
BASELINE_RUN, PREPARED_DATASET = "a baseline run", "a prepared dataset"
# What `train --out` refuses to start in (a trained run without a checkpoint yet restarts: its own kind).
FOREIGN_TO_TRAINING = (BASELINE_RUN, PREPARED_DATASET, IMPORTED_RUN)


class FolderInUse(UserError):
    """Another live process holds the run folder's lock."""


def check_folder_path(folder: str | Path, flag: str = "--out") -> Path:
    """A one-line :class:`UserError` when ``folder`` is a file or lies under one (``flag`` names
    the option the user gave it with); creates nothing. For commands that check before long work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder; choose a folder for the run")
    blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{flag} {folder} is under {blocker}, which is a file, not a folder; choose another path")
    return folder


def make_folder(folder: str | Path, flag: str = "--out") -> Path:
    """Create ``folder`` (and its parents) if needed; a one-line :class:`UserError` when it is a
    file or lies under one (:func:`check_folder_path`)."""
    folder = check_folder_path(folder, flag)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file appeared in between
        check_folder_path(folder, flag)
        raise
    return folder


def step_file_name(global_step: int) -> str:
    """The name of the step checkpoint taken after ``global_step`` steps."""
    return f"step-{global_step:08d}.pt"


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The step checkpoints in ``ckpt_dir`` as (global step, path), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def prune_step_checkpoints(ckpt_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step checkpoints; returns the deleted paths."""
    old = [p for _, p in step_checkpoints(ckpt_dir)]
    doomed = old[: max(0, len(old) - keep)]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def checkpoints_dir(run: str | Path) -> Path:
    """The folder of a run's checkpoints."""
    return Path(run) / CHECKPOINTS


def last_checkpoint(run: str | Path) -> Path:
    """A run's newest checkpoint, ``RUN/checkpoints/last.pt`` (it may not exist yet)."""
    return Path(run) / CHECKPOINTS / LAST


def read_config(run: str | Path) -> dict[str, Any] | None:
    """A run's ``config.json`` (None when it has none); a one-line :class:`UserError` when it
    cannot be read or is not a JSON object."""
    path = Path(run) / CONFIG
    try:
        config = json.loads(read_regular_file(path, _CONFIG_LIMIT) or b"null")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is damaged (not a JSON object)")
    return config


def write_config(run: str | Path, config: dict[str, Any]) -> None:
    """Atomically replace a run's ``config.json``."""
    atomic_write_json(Path(run) / CONFIG, config)


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """A run's metric records, oldest first: the lines of ``metrics.jsonl`` (a network run), or
    the one record of ``metrics.json`` (a baseline); ``[]`` when it has none yet. A one-line
    :class:`UserError` when they cannot be read."""
    jsonl, single = Path(run) / METRICS, Path(run) / BASELINE_METRICS
    try:
        if jsonl.is_file():
            return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
        if single.is_file():
            data = json.loads(single.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else [data]
    except (OSError, ValueError) as e:
        raise UserError(f"the metrics of {run} cannot be read ({e})") from None
    return []


def write_metrics(run: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Atomically replace a run's ``metrics.jsonl`` with ``records``, one JSON line each."""
    atomic_write_text(Path(run) / METRICS, "".join(json.dumps(r) + "\n" for r in records))


def run_kind(path: str | Path) -> RunKind | None:
    """What run ``path`` holds, from its files: ``"network"`` (a trained run with
    ``checkpoints/last.pt``), ``"imported"`` (the same, made by ``alexnet import``: its config
    says ``imported``), ``"baseline"`` (a config of kind :data:`BASELINE_KIND`), or None (not a
    folder, or no run that can be opened yet). Never raises for a damaged config: it is None."""
    path = Path(path)
    if not path.is_dir():
        return None
    try:
        config = read_config(path)
    except UserError:
        config = None
    if config is not None and config.get("kind") == BASELINE_KIND:
        return BASELINE
    if not last_checkpoint(path).is_file():
        return None
    return IMPORTED if config is not None and IMPORTED_KEY in config else NETWORK


def folder_contents(folder: str | Path) -> str | None:
    """What ``folder`` already holds, in words for a refusal ("a trained run", "a baseline run",
    "a prepared dataset", "an imported run", "other files (a.txt, b/)"), or None when it is
    missing or holds nothing but its lock file. Recognised by the files each command writes;
    reads at most one small ``config.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)
    if not names:
        return None
    if "manifest.json" in names or ".work" in names:
        return PREPARED_DATASET
    config: dict[str, Any] | None = None
    if CONFIG in names:
        try:
            config = read_config(folder)
        except (OSError, UserError):
            config = None
    if config is not None and config.get("kind") == BASELINE_KIND:
        return BASELINE_RUN
    if config is not None and IMPORTED_KEY in config and not {METRICS, "tensorboard"} & set(names):
        return IMPORTED_RUN
    if {CHECKPOINTS, METRICS, "tensorboard"} & set(names) or config is not None and "resolved" in config:
        return TRAINED_RUN
    shown = ", ".join(n + ("/" if (folder / n).is_dir() else "") for n in names[:3])
    return f"other files ({shown}{', ...' if len(names) > 3 else ''})"


def claim_folder(folder: str | Path, kind: str, force: bool = False, flag: str = "--out") -> None:
    """Refuse to write ``kind`` (as :func:`folder_contents` words it) into ``folder`` unless it is
    missing or empty, or already holds ``kind`` and ``force`` is given: a command never mixes its
    files into another command's folder, and never replaces its own kind's without being told.
    Call it while holding :func:`run_folder_lock`, so that nobody writes in between."""
    held = folder_contents(folder)
    if held is None:
        return
    if held != kind:
        raise UserError(f"{flag} {folder} already holds {held}; it is left as it is: choose a new or empty folder")
    if not force:
        raise UserError(f"{flag} {folder} already holds {held}; pass --force to replace it, or choose a new folder")


def _try_lock(folder: Path) -> tuple[int | None, str]:
    """Open and lock ``folder/LOCK_NAME``: (descriptor, "") or (None, pid of the holder)."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, ""


@contextlib.contextmanager
def run_folder_lock(
    folder: str | Path, take: bool = True, agree: Callable[[bool], bool] | None = None, flag: str = "--out"
) -> Iterator[Path]:
    """Hold the exclusive write lock of the run folder ``folder`` (created if needed).

    A second holder gets :class:`UserError` "RUN is in use by another alexnet process (pid N)".
    ``take=False`` (ranks other than 0) takes no lock but still calls ``agree``; ``agree(failed)``
    returns whether any process failed (an OR over the ranks; None for a single process).
    """
    folder = Path(folder)
    fd: int | None = None
    error: UserError | None = None
    created = take and not folder.exists()
    if take:
        try:
            make_folder(folder, flag)
            fd, holder = _try_lock(folder)
            if fd is None:
                error = FolderInUse(
                    f"{folder} is in use by another alexnet process (pid {holder}); "
                    "wait for it to finish or choose another folder"
                )
        except UserError as e:
            error = e
        except OSError as e:  # a read-only or full file system: say so here, before any rank waits
            error = UserError(f"cannot write to {e.filename or folder}: {e.strerror or e}")
    failed = error is not None
    if agree is not None:
        failed = agree(failed)
    if failed:
        if fd is not None:
            os.close(fd)
        raise error or UserError(f"{folder} could not be locked by rank 0 (see its message)")
    try:
        yield folder
    finally:
        if fd is not None:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # nothing written (a bad flag):
                with contextlib.suppress(OSError):  # leave no empty run folder behind
                    (folder / LOCK_NAME).unlink()
                    folder.rmdir()
            os.close(fd)  # releases the lock; the file stays (see the module docstring)
