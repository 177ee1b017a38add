"""A rotated JSON-lines file of every result and sample, readable at the clinic with no network.

One JSON object per line with a `type` ("result" or "sample"); size-based rotation
(`results.jsonl`, `.1`, `.2`, ...) through the standard library's RotatingFileHandler.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path


class ResultLog:
    def __init__(self, path: Path, max_bytes: int = 10_000_000, backups: int = 5):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                            encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, kind: str, payload: dict) -> None:
        line = json.dumps({"type": kind, **payload}, separators=(",", ":"))
        self.handler.emit(logging.LogRecord("results", logging.INFO, "", 0, line, None, None))

    def close(self) -> None:
        self.handler.close()
