"""Data-parallel plumbing for ``torchrun``: process group, device per rank, reductions.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), every process joins the
default process group: NCCL when training on CUDA, gloo on CPU. One process per GPU, on
``cuda:LOCAL_RANK``. Launched plainly, everything here is a no-op for a world of one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from alexnet.errors import UserError

_joined_a_group = False  # set once this process has joined a process group (see exit_code)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group if launched by torchrun; returns the context and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); lower --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    global _joined_a_group
    _joined_a_group = True
    return DistContext(rank, world, local_rank, backend), device


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` the way training runs it.

    Gradients are all-reduced bucket by bucket while backward still runs (overlap), and the
    gradients are views into the buckets, which saves one copy of them per step.
    """
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)  # fmt: skip


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (if any)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def exit_code(code: int) -> int:
    """Return ``code`` as the exit status; a process that joined a group ends here, at once.

    Why the shortcut: ``DistributedDataParallel`` keeps the process group referenced from C++, so
    ``destroy_process_group()`` cannot stop gloo's worker threads (torch 2.14: they outlive it).
    A worker thread that drops the tensors of a finished collective while the interpreter is
    shutting down needs the GIL, gets none, and aborts the process ("terminate called without an
    active exception", SIGABRT): torchrun then fails a job whose work was all done (8 of 25 runs of
    ``alexnet bench train --nproc 2`` on a 2-core machine; it failed CI once). Everything has been written
    and closed when the command returns, so such a process flushes its streams and leaves with
    ``os._exit``, skipping the teardown that races with those threads. Any other process (a
    plain run, the tests calling the CLI in-process) just gets ``code`` back.
    """
    if not _joined_a_group:
        return code
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written anyway
            pass
    os._exit(code)


def all_reduce_sum_(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flags: list[bool], ctx: DistContext, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over all ranks (one tiny all-reduce)."""
    if not ctx.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
