"""The durable outbox: every result and sample is written here before it is published.

SQLite in WAL mode (one writer, readers never block it). Rows leave only when the
broker acknowledges them (PUBACK) or, when the outbox is over its row or byte bound,
oldest first, counted as dropped. Rows are read back in id order, so a backlog drains
in the order it was made, after a reconnect or a restart. Used from one thread.

When the disk refuses a write (full, failing) nothing stops: new messages wait in memory
(at most `memory_rows`, oldest dropped and counted), `pending()` hands them to MQTT from
there (delivery beats durability while the disk is full), and they are written to the
file, with the ids they already have, as soon as a retried write succeeds (doubling
backoff). The message ids are assigned here, not by SQLite, so a row keeps its id from
memory to disk and the publisher's bookkeeping holds across the switch.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from edge.diskwrite import Backoff, describe, is_no_space
from edge.errors import BadInput
from edge.lockfile import WriterLock

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                                   payload BLOB NOT NULL, created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Ids of a start whose file could not even be opened continue this far above the highest id
# readable without the write-ahead log, so rows a crash left only in the WAL never collide.
_WAL_MARGIN = 1_000_000


class Row(NamedTuple):
    id: int
    topic: str
    payload: bytes


class Outbox:
    def __init__(self, path: Path, max_rows: int = 100_000, max_bytes: int = 200_000_000, synchronous: str = "normal",
                 memory_rows: int = 10_000):
        self.path = Path(path)
        self.max_rows, self.max_bytes, self.memory_rows = max_rows, max_bytes, memory_rows
        self.synchronous = synchronous
        self.memory: collections.deque[Row] = collections.deque()  # refused by the disk, oldest first
        self.retry = Backoff()
        self.db: sqlite3.Connection | None = None
        self.dropped = self.written = 0  # this run
        self.memory_dropped = 0  # of those dropped: held in memory, never written
        self._undeleted: set[int] = set()  # acknowledged, but the disk refused the DELETE
        self._boot_unsaved: int | None = None
        self._boot_seen = 0
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
            self._open()
        except (sqlite3.Error, OSError) as exc:
            if not is_no_space(exc):
                self.lock.release()
                raise self._refused(exc) from None
            self._start_in_memory(exc)

    # ------------------------------------------------------------------ opening

    def _refused(self, exc: BaseException) -> BadInput:
        text = describe(exc)
        text = {"file is not a database": "not an SQLite file"}.get(text, text)
        return BadInput(f"outbox.path {self.path}: cannot use it as the outbox ({text}); the file was left as it is")

    def _check_existing(self) -> None:
        """Read-only look first: a file that is not an outbox is refused before anything touches it."""
        if self.path.exists():
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {name for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.OperationalError as exc:
                if not is_no_space(exc):  # a full disk cannot even map the WAL index: _open says so
                    raise
                return
            finally:
                probe.close()
            if tables and not {"outbox", "meta"} <= tables:
                raise sqlite3.DatabaseError(f"an SQLite file with other tables ({', '.join(sorted(tables))})")

    def _open(self) -> None:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.synchronous == 'full' else 'NORMAL'}")
            db.executescript(_SCHEMA)
            rows, size, top = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0), COALESCE(MAX(id), 0) FROM outbox").fetchone()
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]
        except BaseException:
            db.close()
            raise
        self.db = db
        held = sum(len(r.payload) for r in self.memory)
        self.rows, self.bytes = rows + len(self.memory), size + held
        if not self.memory:
            self.last_id = max(top, seq)

    def _start_in_memory(self, exc: BaseException) -> None:
        """The disk is too full to open the file: run from memory and open it when a retry succeeds."""
        top, boot = 0, 0
        try:  # immutable: read the file as it is, without the WAL index a full disk cannot hold
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            try:
                top = probe.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0]
                boot = (probe.execute("SELECT value FROM meta WHERE key = 'boot'").fetchone() or (0,))[0]
            finally:
                probe.close()
        except sqlite3.Error:
            pass
        self.rows = self.bytes = 0
        self.last_id = top + _WAL_MARGIN
        self._boot_seen = boot
        self.retry.failed(exc)
        log.error("outbox %s: cannot open it (%s); holding up to %d messages in memory and retrying",
                  self.path, self.retry.error, self.memory_rows)

    # ------------------------------------------------------------------ writing

    def next_boot(self) -> int:
        """A counter that grows by one per agent start: part of every message id.

        When the disk refuses the write, this start takes the Unix time (above any counter,
        and unique per start) and stores it once writes work again."""
        seen = self._boot_seen
        if self.db is not None:
            try:
                self.db.execute("INSERT INTO meta VALUES ('boot', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1")
                return self.db.execute("SELECT value FROM meta WHERE key = 'boot'").fetchone()[0]
            except sqlite3.Error as exc:
                self._failed(exc, "the boot counter")
                try:
                    seen = (self.db.execute("SELECT value FROM meta WHERE key = 'boot'").fetchone() or (0,))[0]
                except sqlite3.Error:
                    pass
        self._boot_unsaved = max(seen + 1, int(time.time()))
        return self._boot_unsaved

    def put(self, topic: str, payload: bytes) -> int:
        """Queue one message; it goes to the file now, or to memory while the disk refuses writes."""
        self.last_id += 1
        self.memory.append(Row(self.last_id, topic, payload))
        self.rows += 1
        self.bytes += len(payload)
        self.written += 1
        self.flush()
        if len(self.memory) > self.memory_rows:
            self._drop_from_memory()
        if self.rows > self.max_rows or self.bytes > self.max_bytes:
            self._drop_oldest()
        return self.last_id

    def flush(self) -> bool:
        """Write what memory holds to the file, if the disk takes writes (now, or when the backoff
        says to try again). True when nothing is left in memory."""
        if not (self.memory or self._undeleted or self._boot_unsaved) or not self.retry.due():
            return not self.memory
        try:
            if self.db is None:
                self._open()
            with self.db:  # one transaction: all of it reaches the file, or none
                self.db.execute("BEGIN")
                self.db.executemany("INSERT INTO outbox (id, topic, payload) VALUES (?, ?, ?)", self.memory)
                if self._undeleted:
                    self._delete_rows(sorted(self._undeleted))
                if self._boot_unsaved:
                    self.db.execute("INSERT INTO meta VALUES ('boot', ?) ON CONFLICT(key) DO UPDATE "
                                    "SET value = max(value, excluded.value)", (self._boot_unsaved,))
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc, f"{len(self.memory)} messages")
            return False
        if self.retry.succeeded():
            log.warning("outbox %s: writes work again; %d messages held in memory are now on disk",
                        self.path, len(self.memory))
        self.memory.clear()
        self._undeleted.clear()
        self._boot_unsaved = None
        return True

    def _failed(self, exc: BaseException, what: str) -> None:
        if self.retry.failed(exc):
            log.error("outbox %s: the disk refused a write (%s); %s held in memory (up to %d), published "
                      "from there, retrying with backoff", self.path, self.retry.error, what, self.memory_rows)

    # ------------------------------------------------------------------ reading and acknowledging

    def pending(self, after: int = 0, limit: int = 100) -> list[Row]:
        """The next rows after id `after`, oldest first: from the file, then from memory (always newer)."""
        rows: list[Row] = []
        if self.db is not None:
            try:
                cur = self.db.execute("SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                      (after, limit))
                rows = [Row(*r) for r in cur]
            except sqlite3.Error as exc:
                log.debug("outbox read failed: %s", exc)
        if len(rows) < limit and self.memory:
            rows += [r for r in self.memory if r.id > after][: limit - len(rows)]
        return rows

    def delete(self, ids: list[int]) -> int:
        """Remove acknowledged rows (those already dropped are ignored); returns how many went."""
        if not ids:
            return 0
        gone = 0
        if self.memory:
            wanted = set(ids)
            keep = [r for r in self.memory if r.id not in wanted]
            for r in self.memory:
                if r.id in wanted:
                    gone += 1
                    self.bytes -= len(r.payload)
            self.memory = collections.deque(keep)
            self.rows -= gone
        if self.db is not None:
            try:
                with self.db:
                    gone += self._delete_rows(ids)
            except sqlite3.Error as exc:
                self._undeleted.update(ids)
                self._failed(exc, "acknowledged rows")
        return gone

    def _delete_rows(self, ids) -> int:
        marks = ",".join("?" * len(ids))
        gone = self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING length(payload)", list(ids)).fetchall()
        self.rows -= len(gone)
        self.bytes -= sum(n for (n,) in gone)
        return len(gone)

    def _drop_from_memory(self) -> None:
        if self.memory_dropped == 0:
            log.error("outbox %s: %d messages held in memory, the disk still refuses writes: dropping the oldest, "
                      "counted in stats", self.path, self.memory_rows)
        while len(self.memory) > self.memory_rows:
            row = self.memory.popleft()
            self.rows -= 1
            self.bytes -= len(row.payload)
            self.dropped += 1
            self.memory_dropped += 1

    def _drop_oldest(self) -> None:
        first = self.dropped == self.memory_dropped
        while self.db is not None and (self.rows > self.max_rows or self.bytes > self.max_bytes):
            n = max(self.rows - self.max_rows, 1)  # over on bytes only: one row at a time
            try:
                with self.db:
                    gone = self.db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?) "
                        "RETURNING length(payload)", (n,)).fetchall()
            except sqlite3.Error as exc:
                self._failed(exc, "the oldest rows over the bound")
                return
            if not gone:
                break
            self.rows -= len(gone)
            self.bytes -= sum(b for (b,) in gone)
            self.dropped += len(gone)
        if first and self.dropped > self.memory_dropped:
            log.warning("outbox %s full (max %d rows / %d bytes): dropping the oldest, counted in stats",
                        self.path, self.max_rows, self.max_bytes)

    # ------------------------------------------------------------------ reporting and closing

    def stats(self) -> dict:
        """The `outbox` part of the stats message (the publisher adds `inflight`)."""
        return {"backlog": self.rows, "bytes": self.bytes, "dropped": self.dropped, "written": self.written,
                "in_memory": len(self.memory), "memory_dropped": self.memory_dropped,
                "disk_error": self.retry.error, "disk_failures": self.retry.failures}

    def oldest_age_s(self) -> float | None:
        """Seconds the oldest queued row has waited (None when empty): the station page's "oldest queued"."""
        if not self.rows:
            return None
        row = self.db.execute("SELECT (julianday('now') - julianday(created)) * 86400 FROM outbox "
                              "ORDER BY id LIMIT 1").fetchone()
        return round(max(row[0], 0.0), 1) if row else None

    def close(self) -> None:
        """A last try at writing what memory holds; what the disk still refuses is lost and said so."""
        if self.memory or self._undeleted or self._boot_unsaved:
            self.retry = Backoff()  # due now
            if not self.flush() and self.memory:
                log.error("outbox %s: %d messages held in memory could not be written (%s) and are lost",
                          self.path, len(self.memory), self.retry.error)
        if self.db is not None:
            self.db.close()
        self.lock.release()
