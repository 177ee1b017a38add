"""A pack sent over MQTT in chunks (`cmd/bundle/chunk`), reassembled on disk so a transfer resumes.

Payload: `{"sha256": <pack sha256>, "index": i, "total": n, "data": <base64>}`. Each chunk
is written to `<store>/incoming/<sha256>/<index>` as it arrives, so a dropped link or an
agent restart loses nothing already received; the sender asks what is missing (the
`transfer` status the agent publishes after every chunk) and sends only that. The whole
pack is checked against its sha256 before anything else looks at it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

from edge.store import SHA

MAX_CHUNKS = 100_000
IN_PROGRESS = 2  # transfers kept at once; a third evicts the oldest


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
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
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


class Reassembler:
    """Chunks on disk under `incoming/`; `add` returns the complete, sha256-checked pack path when done."""

    def __init__(self, incoming: Path, max_bytes: int):
        self.dir, self.max_bytes = Path(incoming), max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)

    def _folder(self, sha: str, total: int) -> Path:
        d = self.dir / sha
        meta = d / "total"
        if d.is_dir() and meta.is_file() and meta.read_text().strip() != str(total):
            shutil.rmtree(d)  # a different split of the same pack: start over
        if not d.is_dir():
            others = sorted((p for p in self.dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            for old in others[: max(0, len(others) - IN_PROGRESS + 1)]:
                shutil.rmtree(old, ignore_errors=True)
            d.mkdir(parents=True)
            meta.write_text(f"{total}\n")
        return d

    def add(self, chunk: Chunk) -> tuple[Transfer, Path | None]:
        """Store one chunk. (progress, pack path once every chunk is in and the sha256 matches).

        Raises BadChunk when the transfer goes over max_bytes or the assembled pack does not
        match its sha256; the transfer is dropped either way."""
        d = self._folder(chunk.sha256, chunk.total)
        part = d / f"{chunk.index:06d}"
        if not part.exists():
            tmp = d / f".{chunk.index:06d}.tmp"
            tmp.write_bytes(chunk.data)
            tmp.replace(part)
        parts = sorted(p for p in d.iterdir() if p.name.isdigit())
        size = sum(p.stat().st_size for p in parts)
        if size > self.max_bytes:
            shutil.rmtree(d, ignore_errors=True)
            raise BadChunk(f"transfer {chunk.sha256[:12]}: over update.max_bytes ({self.max_bytes} bytes)")
        have = {int(p.name) for p in parts}
        missing = [i for i in range(chunk.total) if i not in have]
        progress = Transfer(chunk.sha256, chunk.total, len(have), missing[:256], size)
        if missing:
            return progress, None
        pack = self.dir / f"{chunk.sha256}.leukedge"
        h = hashlib.sha256()
        with open(pack, "wb") as out:
            for p in parts:
                data = p.read_bytes()
                h.update(data)
                out.write(data)
        shutil.rmtree(d, ignore_errors=True)
        if h.hexdigest() != chunk.sha256:
            pack.unlink(missing_ok=True)
            raise BadChunk(f"pack sha256 mismatch (sent {chunk.sha256[:12]}..., got {h.hexdigest()[:12]}...): "
                           "tampered or corrupted in transit")
        return progress, pack
