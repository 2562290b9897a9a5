"""Deterministic random streams keyed by (seed, epoch, step, ...).

Every random choice of the input pipeline (shuffle order, crop offsets, flips, colour noise) is
drawn from a generator seeded by a hash of *what it is for*, never from a stream whose position
depends on history. So a resumed run, a run split over several processes and a run with a
different number of loader workers draw exactly the same numbers.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed that depends on every key (stable across runs, Python versions, platforms)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*keys: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(*keys))
    return g
