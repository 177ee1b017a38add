"""A rotated JSON-lines file of every result and sample, readable at the clinic with no network.

One JSON object per line with a `type` ("result" or "sample"), flushed per line;
size-based rotation (`results.jsonl`, `.1`, `.2`, ...) like logging's RotatingFileHandler,
without its per-record overhead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge.errors import BadInput


class ResultLog:
    def __init__(self, path: Path, max_bytes: int = 10_000_000, backups: int = 5):
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"result_log.path {self.path}: cannot open it for appending ({exc.strerror or exc})") from None
        self._size = self._f.tell()

    def write(self, kind: str, payload: dict) -> None:
        line = json.dumps({"type": kind, **payload}, separators=(",", ":")) + "\n"
        if self._size + len(line) > self.max_bytes and self._size > 0:
            self._rotate()
        self._f.write(line)
        self._f.flush()
        self._size += len(line)

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._f = open(self.path, "w", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        self._f.close()
