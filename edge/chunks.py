"""A pack sent over MQTT in chunks (`cmd/bundle/chunk`), reassembled on disk so a transfer resumes.

Payload: `{"sha256": <pack sha256>, "index": i, "total": n, "data": <base64>}`. Each chunk
is written to `<store>/incoming/<sha256>/<index>` as it arrives, so a dropped link or an
agent restart loses nothing already received; the sender asks what is missing (the
`transfer` status the agent publishes after every chunk) and sends only that. The whole
pack is checked against its sha256 before anything else looks at it.

What each transfer holds is kept in memory (read from disk once, at start), so a chunk
costs the same at part 1,700 as at part 1. Partial transfers do not pile up: at most
IN_PROGRESS at once, those untouched for STALE_S are dropped, and all of them together
stay under update.max_bytes (the oldest dropped first, never the one being fed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from edge.store import SHA

log = logging.getLogger(__name__)

MAX_CHUNKS = 100_000
IN_PROGRESS = 2  # transfers kept at once; a third evicts the oldest
STALE_S = 24 * 3600  # a partial transfer untouched this long is dropped


class BadChunk(ValueError):
    """A chunk payload that is not what the protocol says."""


class Chunk(NamedTuple):
    sha256: str
    index: int
    total: int
    data: bytes


def payload_limit(max_bytes: int) -> int:
    """Largest chunk message accepted: a whole pack of max_bytes in base64, plus the JSON around it."""
    return max_bytes * 4 // 3 + 1024


def parse_chunk(payload: bytes, max_bytes: int) -> Chunk:
    if len(payload) > payload_limit(max_bytes):
        raise BadChunk(f"chunk of {len(payload)} bytes is over the update.max_bytes limit")
    if payload.count(b"{") + payload.count(b"[") > 1:  # hex, numbers and base64 hold neither
        raise BadChunk("chunk must be one flat JSON object (nested arrays or objects found)")
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadChunk("chunk payload is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"sha256", "index", "total", "data"}:
        raise BadChunk("chunk must be an object with exactly sha256, index, total, data")
    sha, index, total, data = body["sha256"], body["index"], body["total"], body["data"]
    if not isinstance(sha, str) or not SHA.match(sha):
        raise BadChunk("chunk sha256 must be 64 lowercase hex digits")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, total)) \
            or not 1 <= total <= MAX_CHUNKS or not 0 <= index < total:
        raise BadChunk(f"chunk index/total must satisfy 0 <= index < total <= {MAX_CHUNKS}")
    if not isinstance(data, str):
        raise BadChunk("chunk data must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadChunk("chunk data is not valid base64") from None
    if not raw:
        raise BadChunk("chunk data is empty")
    return Chunk(sha, index, total, raw)


class Transfer(NamedTuple):
    sha256: str
    total: int
    received: int
    missing: list[int]  # the first few missing indexes
    bytes: int

    def status(self) -> dict:
        return {"type": "transfer", "sha256": self.sha256, "total": self.total, "received": self.received,
                "missing": self.missing}


@dataclass
class _Partial:
    """What one transfer folder holds, so no chunk re-lists it."""

    total: int
    have: set[int] = field(default_factory=set)
    bytes: int = 0
    touched: float = 0.0  # wall clock (comparable with the folder's mtime after a restart)
    low: int = 0  # every index below this one is in

    def missing(self, limit: int = 256) -> list[int]:
        while self.low < self.total and self.low in self.have:
            self.low += 1
        out = []
        for i in range(self.low, self.total):
            if i not in self.have:
                out.append(i)
                if len(out) == limit:
                    break
        return out


def _part(d: Path, index: int) -> Path:
    return d / f"{index:06d}"


class Reassembler:
    """Chunks on disk under `incoming/`; `add` returns the complete, sha256-checked pack path when done."""

    def __init__(self, incoming: Path, max_bytes: int):
        self.dir, self.max_bytes = Path(incoming), max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, _Partial] = {}
        for d in self.dir.iterdir():  # resume what an earlier run received
            if d.is_dir() and not d.is_symlink():
                self.index[d.name] = self._read(d)
        self.expire()

    @staticmethod
    def _read(d: Path) -> _Partial:
        try:
            total = int((d / "total").read_text().strip())
        except (OSError, ValueError):
            total = 0  # not a transfer we can resume: the next expire() or a new chunk replaces it
        t = _Partial(total, touched=d.stat().st_mtime)
        for p in d.iterdir():
            if p.name.isdigit() and int(p.name) < total:
                t.have.add(int(p.name))
                t.bytes += p.stat().st_size
        return t

    def _drop(self, sha: str, why: str | None = None) -> None:
        self.index.pop(sha, None)
        shutil.rmtree(self.dir / sha, ignore_errors=True)
        if why:
            log.info("partial transfer %s dropped: %s", sha[:12], why)

    def expire(self, keep: str | None = None, room: int = 1) -> None:
        """Drop stale transfers, then the oldest others (never `keep`) until `room` more fit in
        IN_PROGRESS and all partial transfers together hold at most max_bytes."""
        now = time.time()
        if keep is None and self.index:  # the periodic check spares the transfer most recently fed
            keep = max(self.index, key=lambda sha: self.index[sha].touched)
        for sha, t in list(self.index.items()):
            if sha != keep and (now - t.touched > STALE_S or t.total == 0):
                self._drop(sha, f"untouched for {(now - t.touched) / 3600:.1f} h" if t.total else "unreadable")
        others = sorted((self.index[sha].touched, sha) for sha in self.index if sha != keep)
        held = self.held()
        while others and (len(others) + room > IN_PROGRESS or held > self.max_bytes):
            _, sha = others.pop(0)
            held -= self.index[sha].bytes
            self._drop(sha, "room for a newer transfer")

    def held(self) -> int:
        """Bytes of chunks on disk, all partial transfers together."""
        return sum(t.bytes for t in self.index.values())

    def _transfer(self, sha: str, total: int) -> _Partial:
        t = self.index.get(sha)
        if t is not None and t.total != total:
            self._drop(sha)  # a different split of the same pack: start over
            t = None
        if t is None:
            self.expire(keep=sha)
            d = self.dir / sha
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            (d / "total").write_text(f"{total}\n")
            t = self.index[sha] = _Partial(total)
        return t

    def add(self, chunk: Chunk) -> tuple[Transfer, Path | None]:
        """Store one chunk. (progress, pack path once every chunk is in and the sha256 matches).

        Raises BadChunk when the transfer goes over max_bytes or the assembled pack does not
        match its sha256; the transfer is dropped either way."""
        t = self._transfer(chunk.sha256, chunk.total)
        d = self.dir / chunk.sha256
        t.touched = time.time()
        if chunk.index not in t.have:
            if t.bytes + len(chunk.data) > self.max_bytes:
                self._drop(chunk.sha256)
                raise BadChunk(f"transfer {chunk.sha256[:12]}: over update.max_bytes ({self.max_bytes} bytes)")
            tmp = d / f".{chunk.index:06d}.tmp"
            tmp.write_bytes(chunk.data)
            tmp.replace(_part(d, chunk.index))
            t.have.add(chunk.index)
            t.bytes += len(chunk.data)
            if self.held() > self.max_bytes:
                self.expire(keep=chunk.sha256, room=0)
        missing = t.missing()
        progress = Transfer(chunk.sha256, chunk.total, len(t.have), missing, t.bytes)
        if missing:
            return progress, None
        return progress, self._assemble(chunk.sha256, t)

    def _assemble(self, sha: str, t: _Partial) -> Path:
        d = self.dir / sha
        pack = self.dir / f"{sha}.leukedge"
        h = hashlib.sha256()
        try:
            with open(pack, "wb") as out:
                for i in range(t.total):
                    data = _part(d, i).read_bytes()
                    h.update(data)
                    out.write(data)
        finally:
            self._drop(sha)
        if h.hexdigest() != sha:
            pack.unlink(missing_ok=True)
            raise BadChunk(f"pack sha256 mismatch (sent {sha[:12]}..., got {h.hexdigest()[:12]}...): "
                           "tampered or corrupted in transit")
        return pack
