"""``alexnet bench train --nproc N``: data-parallel scaling of a training step under torchrun.

For each world size in 1, 2, 4, ..., N (N included) the benchmark launches
``torchrun --standalone --nproc-per-node W -m alexnet.bench.scaling --worker SPEC``: the same
engine as ``torchrun ... -m alexnet train``. Every process times forward + backward + SGD on its
own fixed random batch of the per-process size, the model wrapped in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU) when W > 1, exactly as the trainer does.
After the timed steps each process also times a bare ``all_reduce`` of a float32 buffer the
size of the model's gradients, the communication DDP must hide behind the backward pass.

Per-process images/s = per-process batch / median step time of that rank; total images/s =
W x per-process batch / the slowest rank's median step (steps are synchronised by the
all-reduce, so the slowest rank sets the pace). Scaling efficiency at W = total(W) / (W x
total(1)).

What one "device" is: a GPU on CUDA (one per process). On a CPU every run gives each process the
same share of the cores, ``cpu_count // N`` threads, so a 1-process run uses one device's worth
of the machine and the efficiency compares like with like; the processes of the larger runs
still share memory bandwidth and caches, which GPUs do not.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from alexnet.bench.step import Config, measure_config
from alexnet.errors import UserError


def world_sizes(nproc: int) -> list[int]:
    """1, 2, 4, ... up to and including ``nproc``."""
    sizes, w = [], 1
    while w < nproc:
        sizes.append(w)
        w *= 2
    return [*sizes, nproc]


def threads_per_process(nproc: int) -> int:
    """CPU threads each process gets (the same in every run, see the module docstring)."""
    return max(1, (os.cpu_count() or 1) // nproc)


def _time_all_reduce(numel: int, device: Any, repeats: int = 3) -> float:
    """Median milliseconds of one ``all_reduce`` of ``numel`` float32 values."""
    import torch
    import torch.distributed as dist

    buf = torch.ones(numel, device=device)
    dist.all_reduce(buf)  # sets up the connections
    times = []
    for _ in range(repeats):
        dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _worker_main(argv: list[str]) -> int:
    """One rank of one world size (started by torchrun); rank 0 prints every rank's JSON."""
    import torch

    from alexnet.training.distributed import exit_code, gather_objects, init_from_env, shutdown

    spec = json.loads(argv[argv.index("--worker") + 1])
    torch.set_num_threads(spec["threads"])
    ctx, device = init_from_env(torch.device(spec["device"]))
    torch.manual_seed(ctx.rank)  # each rank its own batch, as in training
    result = measure_config(Config(**spec["config"]), spec["batch_size"], spec["steps"], spec["warmup"],
                            str(device), distributed=ctx.enabled)  # fmt: skip
    result["rank"], result["world_size"] = ctx.rank, ctx.world_size
    if ctx.enabled:
        result["allreduce_ms"] = _time_all_reduce(result["gradient_numel"], device)
    results = gather_objects(result, ctx)
    if ctx.is_main:
        print(json.dumps(results))
    shutdown(ctx)
    return exit_code(0)


def _run_world(world: int, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Launch one world size with torchrun; every rank's result, in rank order."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
           "-m", "alexnet.bench.scaling", "--worker", json.dumps(spec)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"scaling benchmark with {world} process(es) failed:\n{_failure_report(proc.stderr)}")
    return json.loads(lines[-1])


def _failure_report(stderr: str, keep: int = 20) -> str:
    """What the ranks printed themselves (their error) and torchrun's root-cause summary.

    torchrun's own log lines (``W1125 11:45:27.637 ...``) and its traceback come after the
    workers' output; the summary at the very end names the rank and signal.
    """
    out = stderr.strip().splitlines()
    first_log = next((i for i, line in enumerate(out) if re.match(r"[WEI]\d{4} ", line)), len(out))
    workers = out[:first_log][-keep:]
    return "\n".join([*workers, "...", *out[first_log:][-keep:]] if workers else out[-keep:])


def measure_scaling(cfg: Config, nproc: int, batch_size: int, steps: int, warmup: int,
                    device_type: str) -> dict[str, Any]:  # fmt: skip
    """Per-process and total images/s of ``cfg`` for each world size up to ``nproc``."""
    import torch

    if device_type == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc} needs {nproc} GPUs, {torch.cuda.device_count()} visible")
    threads = threads_per_process(nproc)
    runs = []
    for world in world_sizes(nproc):
        print(f"measuring {world} process(es) x {threads} thread(s), batch {batch_size} each ...",
              file=sys.stderr, flush=True)  # fmt: skip
        spec = {"config": asdict(cfg), "batch_size": batch_size, "steps": steps, "warmup": warmup,
                "device": device_type, "threads": threads}  # fmt: skip
        ranks = _run_world(world, spec)
        slowest = max(r["step_ms"] for r in ranks)
        runs.append({
            "world_size": world,
            "per_process_img_s": [r["img_s"] for r in ranks],
            "total_img_s": world * batch_size / (slowest / 1e3),
            "step_ms": slowest,
            "allreduce_ms": max((r.get("allreduce_ms", 0.0) for r in ranks), default=0.0),
        })  # fmt: skip
    single = runs[0]["total_img_s"]
    for run in runs:
        run["efficiency"] = run["total_img_s"] / (run["world_size"] * single)
    return {"threads_per_process": threads, "gradient_numel": ranks[0]["gradient_numel"], "runs": runs}


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
