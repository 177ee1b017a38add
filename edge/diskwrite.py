"""What the outbox and the result log share when the disk refuses a write (full, failing).

A box whose disk fills keeps classifying: writes are retried with a doubling backoff
(never in a tight loop against a full disk), and the errors that mean "no space" are
told apart from those that mean "this path is wrong" (which stop the agent at start).
"""

from __future__ import annotations

import errno
import sqlite3
import time

_NO_SPACE_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}
_SQLITE_FULL, _SQLITE_IOERR = 13, 10  # primary result codes (the low byte of an extended code)


def is_no_space(exc: BaseException) -> bool:
    """True for a write refused for want of space or by a failing device, not for a bad path."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNO


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Backoff:
    """When to try a failing write again: doubling from `first` to `most` seconds, reset by a success."""

    def __init__(self, first: float = 0.5, most: float = 30.0, clock=time.monotonic):
        self.first, self.most, self.clock = first, most, clock
        self.delay = first
        self.error: str | None = None  # the last failure while failing, None when writes work
        self.failures = 0
        self._next = 0.0

    def due(self) -> bool:
        return self.error is None or self.clock() >= self._next

    def failed(self, exc: BaseException) -> bool:
        """Record a failure; True when it is the first of a run of failures (worth a log line)."""
        first = self.error is None
        self.error = describe(exc)
        self.failures += 1
        self._next = self.clock() + self.delay
        self.delay = min(self.delay * 2, self.most)
        return first

    def succeeded(self) -> bool:
        """Record a success; True when it ends a run of failures."""
        recovered = self.error is not None
        self.error, self.delay = None, self.first
        return recovered
