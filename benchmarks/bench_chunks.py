"""Chunk reassembly speed: chunks/s that the box stores (`edge.chunks.Reassembler.add`, on disk,
as the update worker does) for a small transfer and a large one (~1.7k parts).

A rate that falls as the transfer grows means each chunk costs more than the last (the
folder re-listed per chunk); the target is the same rate at part 1,700 as at part 10.
Prints one line per size: parts, chunk size, chunks/s over the whole transfer and over its
last tenth, and the time to assemble and sha256-check the pack at the last chunk.

    python benchmarks/bench_chunks.py [--parts 50 1700] [--chunk-kb 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.chunks import Chunk, Reassembler  # noqa: E402


def run(parts: int, chunk_bytes: int) -> tuple[float, float, float]:
    """(chunks/s over the transfer, chunks/s over its last tenth, ms to assemble and check the pack);
    the two rates leave out the last chunk, which triggers the assembly."""
    data = os.urandom(parts * chunk_bytes)
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="leukedge-bench-chunks-") as tmp:
        r = Reassembler(Path(tmp) / "incoming", max_bytes=len(data) + 1)
        tail = parts - 1 - max(1, parts // 10)
        t0 = t_tail = time.perf_counter()
        for i in range(parts - 1):
            if i == tail:
                t_tail = time.perf_counter()
            r.add(Chunk(sha, i, parts, data[i * chunk_bytes : (i + 1) * chunk_bytes]))
        t1 = time.perf_counter()
        _, pack = r.add(Chunk(sha, parts - 1, parts, data[(parts - 1) * chunk_bytes :]))
        t2 = time.perf_counter()
        assert pack is not None and pack.stat().st_size == len(data)
    return (parts - 1) / (t1 - t0), (parts - 1 - tail) / (t1 - t_tail), (t2 - t1) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, nargs="+", default=[50, 1700])
    ap.add_argument("--chunk-kb", type=int, default=4)
    args = ap.parse_args()
    for parts in args.parts:
        whole, last, assemble_ms = run(parts, args.chunk_kb * 1024)
        print(f"reassembly: {parts:>5} parts of {args.chunk_kb} KiB: {whole:6.0f} chunks/s overall, "
              f"{last:6.0f} chunks/s over the last tenth, assembly {assemble_ms:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
