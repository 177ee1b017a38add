"""Test-only helpers around the agent process (leukedge.agent_process): ids in the results log and
the outbox, and hostile PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leukedge.agent_process import logged

ROOT = Path(__file__).resolve().parents[1]


def logged_ids(results_log: Path, kind: str = "result") -> list[str]:
    return [rec["id"] for rec in logged(results_log, kind)]


def outbox_ids(path: Path, topic_suffix: str = "/result") -> list[str]:
    import sqlite3

    db = sqlite3.connect(str(path))
    try:
        rows = db.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(p)["id"] for t, p in rows if t.endswith(topic_suffix)]


def blank_png(width: int, height: int) -> bytes:
    """A real black RGB PNG of any size: a 16000x16000 one is under 1 MB and built in well
    under a second, without the 768 MB its pixels take once decoded.

    The pixel rows are deflated in identical blocks, each compressed without history and
    ended by a full flush, so one block's bytes can be repeated; the zlib checksum covers
    every row as usual.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels

    def block(rows: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, no history shared with other blocks
        return c.compress(row * rows) + c.flush(zlib.Z_FULL_FLUSH)

    per = max(1, min(height, (1 << 22) // len(row)))  # rows per block: about 4 MB of pixels
    full, data = block(per), row * per
    body, adler = [], 1
    for start in range(0, height, per):
        n = min(per, height - start)
        body.append(full if n == per else block(n))
        adler = zlib.adler32(data if n == per else row * n, adler)
    last = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # the empty final block
    idat = b"\x78\xda" + b"".join(body) + last + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A valid 16x16 PNG whose header (CRC fixed up) claims another size: a lying file."""
    import struct
    import zlib

    import cv2

    data = bytearray(cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
