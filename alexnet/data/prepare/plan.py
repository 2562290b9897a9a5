"""What ``prepare`` will make: its :class:`Settings`, the shards each split is cut into, and the
digests that tell a finished shard (or a finished dataset) from one to make again."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from alexnet.data.prepare import manifest as mf
from alexnet.data.prepare.convert import ENCODINGS
from alexnet.data.prepare.items import SPLITS, ArrayRef, Item, SourcePlan, TarRef
from alexnet.data.prepare.shards import shard_name
from alexnet.errors import UserError

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
