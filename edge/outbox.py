"""The durable outbox: every result and sample is written here before it is published.

SQLite in WAL mode (one writer, readers never block it). Rows leave only when the
broker acknowledges them (PUBACK) or, when the outbox is over its row or byte bound,
oldest first, counted as dropped. Rows are read back in id order, so a backlog drains
in the order it was made, after a reconnect or a restart. Used from one thread.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import NamedTuple

from edge.errors import BadInput
from edge.lockfile import WriterLock

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                                   payload BLOB NOT NULL, created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Row(NamedTuple):
    id: int
    topic: str
    payload: bytes


class Outbox:
    def __init__(self, path: Path, max_rows: int = 100_000, max_bytes: int = 200_000_000, synchronous: str = "normal"):
        self.path = Path(path)
        self.max_rows, self.max_bytes = max_rows, max_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"outbox.path {self.path}: cannot create its folder ({exc.strerror})") from None
        try:
            self._check_existing()
            self.lock = WriterLock(self.path).acquire()
        except (sqlite3.Error, OSError) as exc:
            raise self._refused(exc) from None
        try:
            self._open(synchronous)
        except (sqlite3.Error, OSError) as exc:
            self.lock.release()
            raise self._refused(exc) from None
        self.dropped = 0  # this run
        self.written = 0

    def _refused(self, exc: BaseException) -> BadInput:
        return BadInput(f"outbox.path {self.path}: cannot use it as the outbox ({_reason(exc)}); "
                        "the file was left as it is")

    def _check_existing(self) -> None:
        """Read-only look first: a file that is not an outbox is refused before anything touches it."""
        if self.path.exists():
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {name for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                probe.close()
            if tables and not {"outbox", "meta"} <= tables:
                raise sqlite3.DatabaseError(f"an SQLite file with other tables ({', '.join(sorted(tables))})")

    def _open(self, synchronous: str) -> None:
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self.db.executescript(_SCHEMA)
        self.rows, self.bytes = self.db.execute("SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM outbox").fetchone()
        self.last_id = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0]

    def next_boot(self) -> int:
        """A counter that grows by one per agent start: part of every message id."""
        with self.db:
            self.db.execute("INSERT INTO meta VALUES ('boot', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1")
        return self.db.execute("SELECT value FROM meta WHERE key = 'boot'").fetchone()[0]

    def put(self, topic: str, payload: bytes) -> int:
        row_id = self.db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)).lastrowid
        self.last_id = row_id
        self.rows += 1
        self.bytes += len(payload)
        self.written += 1
        if self.rows > self.max_rows or self.bytes > self.max_bytes:
            self._drop_oldest()
        return row_id

    def pending(self, after: int = 0, limit: int = 100) -> list[Row]:
        cur = self.db.execute("SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [Row(*r) for r in cur]

    def delete(self, ids: list[int]) -> int:
        """Remove acknowledged rows (those already dropped are ignored)."""
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self.db:
            gone = self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING length(payload)", ids).fetchall()
        self.rows -= len(gone)
        self.bytes -= sum(n for (n,) in gone)
        return len(gone)

    def _drop_oldest(self) -> None:
        first = self.dropped == 0
        while self.rows > self.max_rows or self.bytes > self.max_bytes:
            n = max(self.rows - self.max_rows, 1)  # over on bytes only: one row at a time
            with self.db:
                gone = self.db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?) RETURNING length(payload)",
                    (n,),
                ).fetchall()
            if not gone:
                break
            self.rows -= len(gone)
            self.bytes -= sum(b for (b,) in gone)
            self.dropped += len(gone)
        if first and self.dropped:
            log.warning("outbox %s full (max %d rows / %d bytes): dropping the oldest, counted in stats",
                        self.path, self.max_rows, self.max_bytes)

    def stats(self) -> dict:
        """The `outbox` part of the stats message (the publisher adds `inflight`)."""
        return {"backlog": self.rows, "bytes": self.bytes, "dropped": self.dropped, "written": self.written}

    def close(self) -> None:
        self.db.close()
        self.lock.release()


def _reason(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return {"file is not a database": "not an SQLite file"}.get(text, text)
