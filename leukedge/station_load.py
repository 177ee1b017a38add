"""Hostile clients against one station page, on 127.0.0.1 only, bounded in count and time.

Shared by tests/test_hostile_station.py and benchmarks/bench_station_load.py: slow
clients (one byte a second, reconnecting whenever the server closes them), SSE clients
that reopen their stream when it ends or is refused, and oversized requests (a 1 MB
request line, 10,000 headers, a 1 GB Content-Length) in a loop. `probe_healthz` times
`/healthz` meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request


class Load:
    def __init__(self, port: int, slow: int = 150, streams: int = 40, oversized: bool = True):
        self.addr = ("127.0.0.1", port)
        self.slow, self.streams, self.oversized = slow, streams, oversized
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.counts = {"slow_reconnects": 0, "stream_opens": 0, "stream_refused": 0, "oversized_answers": 0}
        self.lock = threading.Lock()

    def __enter__(self) -> "Load":
        self.threads.append(threading.Thread(target=self._slow_clients, daemon=True))
        self.threads += [threading.Thread(target=self._stream, daemon=True) for _ in range(self.streams)]
        if self.oversized:
            self.threads.append(threading.Thread(target=self._oversized, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(self.addr, timeout=5)
        except OSError:
            return None

    def _slow_clients(self) -> None:
        """`slow` connections sending "GET / HTTP/1.1..." one byte a second, each reopened when closed."""
        head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 4000
        socks: list[tuple[socket.socket | None, int]] = [(None, 0)] * self.slow
        while not self.stopping.is_set():
            for i, (s, sent) in enumerate(socks):
                if s is None:
                    s, sent = self._connect(), 0
                    if s is None:
                        continue
                try:
                    s.send(head[sent % len(head):sent % len(head) + 1])
                    socks[i] = (s, sent + 1)
                except OSError:
                    s.close()
                    socks[i] = (None, 0)
                    self._count("slow_reconnects")
            self.stopping.wait(1.0)
        for s, _ in socks:
            if s is not None:
                s.close()

    def _stream(self) -> None:
        """An SSE client: open, read until the server ends or refuses it, reopen after 0.5 s."""
        while not self.stopping.is_set():
            s = self._connect()
            if s is None:
                self.stopping.wait(0.5)
                continue
            try:
                s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
                s.settimeout(1.0)
                first = s.recv(64)
                self._count("stream_opens" if first.startswith(b"HTTP/1.1 200") else "stream_refused")
                while first and not self.stopping.is_set():
                    try:
                        first = s.recv(65536)
                    except socket.timeout:
                        continue
            except OSError:
                pass
            finally:
                s.close()
            self.stopping.wait(0.5)

    def _oversized(self) -> None:
        requests = [b"GET /" + b"x" * 1_000_000 + b" HTTP/1.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10_000)) + b"\r\n",
                    b"POST /api/sample/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n"]
        while not self.stopping.is_set():
            for raw in requests:
                s = self._connect()
                if s is None:
                    continue
                try:
                    s.sendall(raw)
                    if s.recv(64).startswith(b"HTTP/1."):
                        self._count("oversized_answers")
                except OSError:
                    pass  # closed while we still sent: also an answer
                finally:
                    s.close()
            self.stopping.wait(0.2)


def probe_healthz(url: str, seconds: float, every_s: float = 0.2, timeout: float = 10.0) -> list[float]:
    """Latencies (s) of `/healthz` polled for `seconds`; raises on any failure or non-200."""
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        with urllib.request.urlopen(url + "healthz", timeout=timeout) as r:
            r.read()
            assert r.status == 200, r.status
        latencies.append(time.perf_counter() - t)
        time.sleep(every_s)
    return latencies
