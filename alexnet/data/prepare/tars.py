"""Listing and reading tar archives in place, without extracting them.

The ILSVRC-2012 training tar is 138 GB: 1000 uncompressed per-class tars inside one
uncompressed tar. :func:`list_members` walks the headers only (tarfile seeks over the data),
also inside nested tars, and gives each image's absolute byte offset and size in the outer file.
A worker then reads one image with one ``pread``, in any order, so the conversion can run on
many processes, a resumed run reads only the shards it still needs, and nothing is ever
written to disk but the output. Member names are used only as keys, never as paths.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from alexnet.errors import UserError


class Member(NamedTuple):
    """A regular file inside a tar: its name, absolute data offset and size in the outer file."""

    name: str
    offset: int
    size: int
    regular: bool


def is_compressed(path: str | os.PathLike) -> bool:
    """Whether the file starts with a gzip, bzip2 or xz signature."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00"


def open_plain_tar(path: str | os.PathLike) -> tarfile.TarFile:
    """Open an uncompressed tar for random access; a clear error for anything else."""
    if is_compressed(path):
        raise UserError(
            f"{path} is a compressed tar; the ILSVRC/Kaggle image tars are plain tars, "
            "decompress it first (or extract it) and run prepare again"
        )
    try:
        return tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{path} is not a readable tar file ({e}); download it again") from None


def iter_members(
    tar: tarfile.TarFile, base: int = 0, limit: int | None = None, damage: list[str] | None = None
) -> Iterator[Member]:
    """Every member of ``tar`` except folders, with offsets shifted by ``base``.

    A truncated or damaged archive ends the listing at the last complete header. The member
    whose data is cut short is still listed (it fails when read, so it is reported); what
    follows the cut cannot be listed, so a line saying so is appended to ``damage``. ``limit``
    is the absolute byte where the archive's bytes end (file size, or end of the outer member).
    """
    while True:
        try:
            info = tar.next()
        except tarfile.ReadError as e:  # damaged header after the last good member: stop there
            if damage is not None:
                damage.append(f"damaged tar header after byte {tar.offset} ({e})")
            return
        if info is None:
            return
        if info.isdir():
            continue
        member = Member(info.name, base + info.offset_data, info.size, info.isreg())
        if limit is not None and member.offset + member.size > limit and damage is not None:
            damage.append(f"the tar ends inside {info.name}; whatever followed it is missing")
        yield member


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of an open binary file."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + pos)
        return self.pos

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = max(0, min(len(buf), self.size - self.pos))
        if n == 0:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def open_nested(f: BinaryIO, member: Member) -> tarfile.TarFile:
    """Open a tar stored uncompressed as ``member`` of the tar open as ``f`` (headers only)."""
    window = io.BufferedReader(_Window(f, member.offset, member.size), buffer_size=512)
    return tarfile.open(fileobj=window, mode="r:")


def read_range(path: str, offset: int, size: int, cache: dict[str, int] | None = None) -> bytes:
    """``size`` bytes at ``offset`` of ``path`` (one ``pread``; file descriptors cached)."""
    if cache is None:
        fd = os.open(path, os.O_RDONLY)
        try:
            return _pread_all(fd, size, offset)
        finally:
            os.close(fd)
    fd = cache.get(path)
    if fd is None:
        if len(cache) >= 64:
            for old in list(cache)[:32]:
                os.close(cache.pop(old))
        fd = cache[path] = os.open(path, os.O_RDONLY)
    return _pread_all(fd, size, offset)


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
