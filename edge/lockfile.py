"""One writer per outbox: an exclusive `flock` on a side file (`<outbox>.lock`) holding the pid.

The lock is on a side file, not on the SQLite file, so readers of the outbox (a backlog
check, a support script) still work while an agent runs. Two agents writing one outbox
would publish each other's rows twice and count a negative backlog; the second refuses.
The kernel drops the lock when the process dies, so a kill -9 leaves no stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from edge.errors import BadInput

log = logging.getLogger(__name__)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class WriterLock:
    def __init__(self, target: Path):
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        """Take the lock or raise BadInput naming the pid that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in _DISK_FULL:  # no inode left: the outbox itself will report the full disk
                log.warning("cannot create %s (%s): running without the one-writer lock", self.path, exc.strerror)
                return self
            raise BadInput(f"outbox.path {self.target}: cannot create its lock file {self.path.name} "
                           f"({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BadInput(f"outbox {self.target} is in use by another agent (pid {holder}); "
                           "give each agent its own outbox.path") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds, only the pid note is missing
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
