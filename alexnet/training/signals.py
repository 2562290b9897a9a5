"""SIGTERM and SIGINT stop a run cleanly: the first one becomes a flag the loop checks after each
step (it then saves a checkpoint and raises :class:`TrainingInterrupted`); a second stops at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alexnet.errors import Interrupted


class TrainingInterrupted(Interrupted):
    """SIGTERM/SIGINT arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        super().__init__(signum, f"stopped by {signal.Signals(signum).name}; checkpoint saved to {checkpoint}")


@contextmanager
def stop_on_signals() -> Iterator[Any]:
    """Turn the first SIGTERM/SIGINT into a flag (``.signum``) the loop checks after each step."""

    class Flag:
        signum: int | None = None

    flag = Flag()

    def handler(signum: int, _frame: Any) -> None:
        if flag.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
