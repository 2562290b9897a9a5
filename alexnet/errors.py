"""The exception types that the command line turns into one line: :class:`UserError` (exit 2) and
:class:`Interrupted` (exit 128 + the signal), and how a value from a user's file is quoted in
such a message."""

from __future__ import annotations

from typing import Any


class UserError(ValueError):
    """Something the user can fix: a bad path, flag, value, file or checkpoint.

    The message is one line that says what is wrong and what to do about it.
    """


class Interrupted(Exception):
    """A signal (SIGINT, SIGTERM) stopped the work after saving what it had; the same command
    resumes it. ``signum``: the signal, for the exit status 128 + ``signum``."""

    def __init__(self, signum: int, message: str) -> None:
        self.signum = signum
        super().__init__(message)


def one_line(value: Any, limit: int = 160) -> str:
    """``value`` quoted on one line for a :class:`UserError` (a tensor's repr spans several lines,
    a hostile file's value can be huge), cut at ``limit`` characters."""
    text = " ".join((value if isinstance(value, str) else repr(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
