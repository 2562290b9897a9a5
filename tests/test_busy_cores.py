"""The busy-cores warning: other processes' CPU time measured from /proc/stat, and the one line
the trainer prints after its first epoch when its OpenMP threads cannot all run at once.

(A busy loop beside a real training run is checked by hand, not here: it slows the run ~20x.)"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from alexnet.runtime import OtherLoad, busy_cores_warning


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_other_load_sees_a_busy_process() -> None:
    load = OtherLoad()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    time.sleep(1.0)  # measured while it spins, not yet waited for: another process's time
    other = load.cpus()
    busy.wait(30)
    assert other is not None and other >= 0.5  # about one CPU (more if the machine is busy otherwise)


@pytest.mark.parametrize(
    ("other", "threads", "cpus", "fires"),
    [
        (0.0, 2, 2, False),  # idle machine
        (1.0, 2, 2, True),  # two busy loops beside a 2-thread run on 2 cores: each loop gets half a core
        (1.9, 1, 2, False),  # one thread never waits for another
        (0.3, 2, 2, False),  # a little background work: within the half-CPU margin
        (6.0, 8, 16, False),  # enough free cores for every thread
        (None, 4, 2, False),  # not measurable (no /proc/stat)
    ],
)
def test_busy_cores_warning(other: float | None, threads: int, cpus: int, fires: bool) -> None:
    line = busy_cores_warning(other, threads, cpus)
    assert (line is not None) == fires
    if line:
        assert line.startswith("warning:") and "\n" not in line
        assert f"{other:.1f} of this machine's {cpus} CPUs" in line and "OMP_NUM_THREADS=1" in line
