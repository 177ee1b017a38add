"""A rotated JSON-lines file of every result and sample, readable at the clinic with no network.

One JSON object per line with a `type` ("result" or "sample"), written per line;
size-based rotation (`results.jsonl`, `.1`, `.2`, ...) like logging's RotatingFileHandler,
without its per-record overhead.

When the disk refuses a write (full, failing) lines wait in memory (at most
`memory_lines`, oldest dropped and counted) and are written, in order, once a retried
write succeeds. A line the disk cut short is ended with a newline before the next one,
so a reader meets one unparsable line, never two records run together.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path

from edge.diskwrite import Backoff
from edge.errors import BadInput

log = logging.getLogger(__name__)


class ResultLog:
    def __init__(self, path: Path, max_bytes: int = 10_000_000, backups: int = 5, memory_lines: int = 10_000):
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        self.memory_lines = memory_lines
        self.waiting: collections.deque[bytes] = collections.deque()
        self.retry = Backoff()
        self.dropped = 0
        self._torn = False  # the last write stopped part-way through a line
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab", buffering=0)
        except OSError as exc:
            raise BadInput(f"result_log.path {self.path}: cannot open it for appending ({exc.strerror or exc})") from None
        self._size = self._f.tell()

    def write(self, kind: str, payload: dict) -> None:
        self.waiting.append((json.dumps({"type": kind, **payload}, separators=(",", ":")) + "\n").encode())
        if len(self.waiting) > self.memory_lines:
            self.waiting.popleft()
            self.dropped += 1
        self.flush()

    def flush(self) -> None:
        """Write the lines that wait, if the disk takes writes (now, or when the backoff says to retry)."""
        if self.waiting and self.retry.due():
            self._write_waiting()

    def _write_waiting(self) -> None:
        try:
            if self._f.closed:  # a rotation the disk cut short
                self._f = open(self.path, "ab", buffering=0)
                self._size = self._f.tell()
            if self._torn:
                self._write_all(b"\n")
                self._torn = False
            while self.waiting:
                line = self.waiting[0]
                if self._size + len(line) > self.max_bytes and self._size > 0:
                    self._rotate()
                self._write_all(line)
                self.waiting.popleft()
        except OSError as exc:
            if self.retry.failed(exc):
                log.error("result log %s: the disk refused a write (%s); lines wait in memory (up to %d), "
                          "retrying with backoff", self.path, self.retry.error, self.memory_lines)
            return
        if self.retry.succeeded():
            log.warning("result log %s: writes work again", self.path)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            self._size += n
            if n < len(view):
                self._torn = True
            view = view[n:]
        self._torn = False

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._f = open(self.path, "wb", buffering=0)
        self._size = 0

    def stats(self) -> dict:
        return {"waiting": len(self.waiting), "dropped": self.dropped, "disk_error": self.retry.error}

    def close(self) -> None:
        if self.waiting:
            self.retry = Backoff()
            self._write_waiting()
            if self.waiting:
                log.error("result log %s: %d lines could not be written (%s)", self.path, len(self.waiting),
                          self.retry.error)
        self._f.close()
