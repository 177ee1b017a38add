"""The station page's front door: one thread reads every request before any worker sees it.

Why: with a thread per connection, a client that sends one byte every few seconds holds
its thread (and, under a cap, a slot) as long as it likes; a hundred of them locked the
page and `/healthz` out. Here one selector thread accepts, finishes TLS handshakes and
reads each request's head (and a POST's small body) without blocking, every connection
under a total deadline that bytes do not reset. Only a complete request reaches a worker
thread; the probes are answered right here, so they get through however many connections
are pending; SSE streams have a cap of their own; a kept-alive connection comes back here
to wait for its next request. Resets and half-sent requests are counted and logged in one
rate-limited line, never as a traceback.
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import threading
import time

from edge.loglimit import LimitedLog

log = logging.getLogger("edge.station.server")

HEAD_TIMEOUT_S = 5.0  # accept (or the last answer) to a complete request; bytes do not extend it
MAX_HEAD = 16 * 1024  # request line and headers together; beyond: 431
MAX_PENDING = 256  # connections still sending their request; beyond: the oldest is closed
MAX_WORKERS = 32  # requests being answered at once; beyond: 503 at once
MAX_STREAMS = 16  # SSE streams at once, on threads of their own; beyond: 503 at once
WRITE_TIMEOUT_S = 10.0  # a client that stops reading its answer loses the connection
STREAM_PATHS = ("/api/events",)
PROBE_PATHS = ("/healthz", "/readyz")
DROP_REASONS = ("timeout", "reset", "evicted", "busy", "too_large", "tls", "error")


class Conn:
    """One client connection while the gate holds it: its socket, unread bytes and deadline."""

    __slots__ = ("sock", "addr", "buf", "deadline", "handshaking")

    def __init__(self, sock, addr, handshaking: bool):
        self.sock, self.addr, self.handshaking = sock, addr, handshaking
        self.buf = b""
        self.deadline = time.monotonic() + HEAD_TIMEOUT_S


class Request:
    """A complete request as read by the gate: its bytes, path, and whether to close after it."""

    def __init__(self, raw: bytes, method: str, path: str, close: bool):
        self.raw, self.method, self.path, self.close = raw, method, path, close


def split_request(buf: bytes, body_limit: int) -> tuple[Request | None, bytes]:
    """(the first complete request in buf, the bytes after it), or (None, buf) while incomplete.

    Only what routing needs is read here (method, path, Content-Length); the handler parses
    the request again with http.server's own parser. A body over body_limit, a bad length or
    a chunked body is not read: the handler answers from the head and the connection closes.
    """
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    if not ends:
        return None, buf
    head_end = min(ends)
    lines = buf[:head_end].decode("latin-1").splitlines()
    parts = lines[0].split() if lines else []
    method, path = (parts + ["", ""])[:2]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    close = "transfer-encoding" in headers
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        length = -1
    if not 0 <= length <= body_limit:
        length, close = 0, True
    if len(buf) < head_end + length:
        return None, buf
    end = head_end + length
    return Request(buf[:end], method, path.split("?")[0], close), buf[end:]


def plain_answer(status: int, phrase: str, message: str, retry_after: int | None = None) -> bytes:
    """A short JSON refusal written by the gate itself (busy, too large), then the connection closes."""
    body = ('{"error":"%s"}' % message).encode()
    extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\n{extra}Connection: close\r\n\r\n").encode() + body


class Gate:
    """Accepts on `listener`; `handle(sock, addr, request) -> keep_alive` runs on a worker thread,
    `answer_probe(addr, request) -> bytes` runs here and must not block."""

    def __init__(self, listener: socket.socket, tls: ssl.SSLContext | None, handle, answer_probe, body_limit: int):
        self.listener, self.tls, self.handle, self.answer_probe = listener, tls, handle, answer_probe
        self.body_limit = body_limit
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.pending: collections.OrderedDict[int, Conn] = collections.OrderedDict()  # oldest first
        self.returned: collections.deque[Conn] = collections.deque()
        self.workers = threading.BoundedSemaphore(MAX_WORKERS)
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._drop_lock = threading.Lock()
        self.noisy = LimitedLog(log, burst=1, every_s=60.0,
                                counted_in="/metrics (leukedge_ui_connections_dropped_total)")
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="station-gate", daemon=True)

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.closing = True
        self._wake()
        self.thread.join(10)
        for conn in list(self.pending.values()):
            self._close(conn)
        self.sel.close()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already full (a wake is pending) or closed

    def _run(self) -> None:
        while not self.closing:
            first = next(iter(self.pending.values()), None)
            wait = 1.0 if first is None else min(1.0, max(0.0, first.deadline - time.monotonic()))
            for key, _ in self.sel.select(wait):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                elif key.data.sock.fileno() >= 0:  # not closed by an eviction earlier in this batch
                    self._readable(key.data)
            self._expire()

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: make room, say so (rate-limited)
                self._evict_oldest()
                self._drop("error", None, exc)
                return
            sock.setblocking(False)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError) as exc:
                    sock.close()
                    self._drop("tls", addr, exc)
                    continue
            self._hold(Conn(sock, addr, handshaking=self.tls is not None))

    def _hold(self, conn: Conn) -> None:
        """Wait (here, threadless) for the connection's next complete request."""
        if len(self.pending) >= MAX_PENDING:
            self._evict_oldest()
        self.pending[conn.sock.fileno()] = conn
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)
        self._readable(conn)  # a TLS handshake to start, or bytes a kept-alive client already sent

    def _release(self, conn: Conn) -> None:
        self.pending.pop(conn.sock.fileno(), None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: Conn, dropped: str | None = None, exc: BaseException | None = None) -> None:
        """Close a connection; a `dropped` reason is counted first, so whoever sees the close sees the count."""
        if dropped:
            self._drop(dropped, conn.addr, exc)
        self._release(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    def _evict_oldest(self) -> None:
        if self.pending:
            conn = next(iter(self.pending.values()))
            self._close(conn, "evicted")

    def _expire(self) -> None:
        now = time.monotonic()
        while self.pending:
            conn = next(iter(self.pending.values()))
            if conn.deadline > now:
                return
            # an idle kept-alive connection timing out is normal
            self._close(conn, "timeout" if conn.buf or conn.handshaking else None)

    def _readable(self, conn: Conn) -> None:
        try:
            if conn.handshaking:
                conn.sock.do_handshake()
                conn.handshaking = False
            while len(conn.buf) <= MAX_HEAD + self.body_limit:
                data = conn.sock.recv(65536)
                if not data:
                    self._close(conn, "reset" if conn.buf else None)
                    return
                conn.buf += data
        except ssl.SSLWantWriteError:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        except (BlockingIOError, ssl.SSLWantReadError):
            if self.sel.get_key(conn.sock).events != selectors.EVENT_READ:
                self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
            if conn.handshaking:
                return
        except ssl.SSLError as exc:
            self._close(conn, "tls", exc)
            return
        except OSError as exc:
            self._close(conn, "reset", exc)
            return
        self._dispatch(conn)

    def _dispatch(self, conn: Conn) -> None:
        request, rest = split_request(conn.buf, self.body_limit)
        if request is None:
            if len(conn.buf) > MAX_HEAD:
                self._refuse(conn, plain_answer(431, "Request Header Fields Too Large", "request head over 16 kB"),
                             "too_large")
            return
        conn.buf = rest
        self._release(conn)
        if request.method in ("GET", "HEAD") and request.path in PROBE_PATHS:
            self._refuse(conn, self.answer_probe(conn.addr, request.raw), None)
            return
        slots = self.streams if request.path in STREAM_PATHS else self.workers
        if not slots.acquire(blocking=False):
            self._refuse(conn, plain_answer(503, "Service Unavailable", "busy, try again", retry_after=2), "busy")
            return
        threading.Thread(target=self._work, args=(conn, request, slots), name="station-http", daemon=True).start()

    def _refuse(self, conn: Conn, answer: bytes, reason: str | None) -> None:
        """Answer from this thread and close: a short write into an empty socket buffer does not block."""
        try:
            conn.sock.send(answer)
        except (OSError, ValueError):
            pass
        self._close(conn, reason)

    # ------------------------------------------------------------------ workers

    def _work(self, conn: Conn, request: Request, slots: threading.BoundedSemaphore) -> None:
        keep = False
        try:
            conn.sock.settimeout(WRITE_TIMEOUT_S)
            keep = self.handle(conn.sock, conn.addr, request.raw) and not request.close
        except Exception as exc:  # noqa: BLE001 - a reset mid-answer or a bug: one limited line, not a traceback
            self._drop("reset" if isinstance(exc, OSError) else "error", conn.addr, exc)
            log.debug("station page: request from %s failed", conn.addr, exc_info=True)
        finally:
            slots.release()
        if keep and not self.closing:
            try:
                conn.sock.setblocking(False)
            except OSError:
                keep = False
        if keep and not self.closing:
            conn.deadline = time.monotonic() + HEAD_TIMEOUT_S
            self.returned.append(conn)
            self._wake()
        else:
            try:
                conn.sock.close()
            except OSError:
                pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while self.returned:
            self._hold(self.returned.popleft())

    # ------------------------------------------------------------------ accounting

    def _drop(self, reason: str, addr, exc: BaseException | None) -> None:
        who = addr[0] if addr else "?"
        why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        with self._drop_lock:  # the gate and the workers both count
            self.dropped[reason] += 1
            self.noisy.warning("station page: dropped a connection from %s (%s%s)", who, reason, why)
