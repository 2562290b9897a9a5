"""WebDataset-format tar shards, written so that a kill never leaves a bad one in place.

A shard is a plain (uncompressed) tar; sample ``key`` is two members, ``<key>.jpg`` (or
``<key>.npy`` for raw pixels) and ``<key>.cls`` (the label as ASCII digits), so WebDataset and
``tar`` read it as is. Headers are deterministic (mtime 0, uid/gid 0, mode 0644), so the same
samples give the same bytes. The writer records the byte offset and length of every image
member's data: the split index lets a reader fetch any sample with one ``pread``.

Everything else is written with :func:`alexnet.io.atomic_write` (temporary name in the same
folder, fsync, rename): the final name only ever holds a complete file.
"""

from __future__ import annotations

import io
import tarfile
from typing import BinaryIO

from alexnet.data.prepare.items import member_name


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Append samples to an open binary file as a tar; remembers where each image's data is."""

    def __init__(self, f: BinaryIO, extension: str) -> None:
        self.tar = tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by close())
        self.extension = extension

    def add(self, key: str, label: int, image: bytes) -> tuple[int, int]:
        """Write one sample; returns (offset, length) of the image bytes in the file."""
        name = member_name(key)
        self.tar.addfile(_info(f"{name}.{self.extension}", len(image)), io.BytesIO(image))
        end = self.tar.offset
        offset = end - (-(-len(image) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
        cls = str(label).encode("ascii")
        self.tar.addfile(_info(f"{name}.cls", len(cls)), io.BytesIO(cls))
        return offset, len(image)

    def close(self) -> None:
        self.tar.close()

