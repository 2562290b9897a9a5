"""Atomic file writes: a file being written never replaces a good one half-done.

The one implementation for the whole package (checkpoints, metrics, ``prepare``'s shards,
indexes and manifest, contact sheets).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from alexnet.errors import UserError


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: done once, at import
    os.umask(mask)
    return mask


# mkstemp makes its file 0600; the finished file gets what open() would have given it.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A reader (or a resumed job) sees either the old file or the complete new one, never a
    partial write, even if the process is killed with SIGKILL in the middle; the folder is
    fsynced after the rename, so the new name survives a power cut too. The temporary file is
    ``.<name>.tmp.<random>`` (``prepare`` removes such leftovers of a killed run).
    """
    path = Path(path)
    try:
        _replace(path, write)
    except OSError as e:  # name the file the caller asked for, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def _replace(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    with _temporary(path) as tmp, open(tmp, "r+b") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The path of an empty temporary file beside ``path``, for writers that need a name rather
    than a stream (a NumPy memmap); when the block ends without an error it is fsynced and renamed
    over ``path`` like :func:`atomic_write` does, otherwise removed. A memmap's pages are written
    when the kernel likes, so a full disk shows up as SIGBUS instead of an error: call
    :func:`reserve_space` on the file once it has its size."""
    path = Path(path)
    try:
        with _temporary(path) as tmp:
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:  # name the file the caller asked for, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def reserve_space(path: str | Path) -> None:
    """Allocate every block of the (sparse) file ``path`` now: :class:`OSError` ENOSPC here when the
    disk cannot hold it, rather than SIGBUS when a memmap later writes to a page it cannot have."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """``.<name>.tmp.<random>`` beside ``path`` (mode as open() would give), renamed over ``path``
    when the block succeeds, removed when it fails; then the folder is fsynced."""
    blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # mkdir would only say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a failed write (disk full) leaves no half file behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


# An input image file (or standard input) larger than this is refused before it is read: the
# biggest ImageNet JPEG is under 16 MB, and Pillow refuses more than ~179 M pixels anyway.
MAX_IMAGE_BYTES = 64 << 20


def read_capped(f: IO[bytes], limit: int, name: str) -> bytes:
    """All of the stream ``f`` (standard input, a pipe) but at most ``limit`` bytes: more is a
    one-line :class:`UserError`, after reading ``limit + 1`` bytes and never more (``/dev/zero``)."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{name} is larger than {limit >> 20} MB; refused (nothing that large is an image)")
    return data


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them. Opened without waiting
    (a FIFO never blocks the reader) and checked before a byte is read: a FIFO, a device
    (``/dev/zero``), a folder or a file over ``limit`` is a one-line :class:`UserError`;
    :class:`OSError` (not found, no permission) passes through for the caller to word."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path} is not a regular file (a FIFO, a device or a socket); not read")
        if st.st_size > limit:
            raise UserError(f"{path} is {st.st_size >> 20} MB, more than the {limit >> 20} MB an image may be; refused")
        return read_capped(f, limit, str(path))  # the size may have grown since fstat


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically replace ``path`` with ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def replace_with_link(src: str | Path, dst: str | Path) -> None:
    """``dst`` becomes another name for ``src``'s current content (a hard link; a copy where the
    file system has none), replacing ``dst`` by rename. A file that is itself always replaced by
    rename (a run's ``last.pt``) leaves the link with the old content: the link costs no write
    when taken, but holds a full copy once ``src`` has moved on."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)
