"""The station's HTTP server: http.server's request handler behind a gate of our own.

Why the stdlib: the page needs a dozen routes, Server-Sent Events, basic auth and TLS,
all of which `http.server` and `ssl` do in a few lines, with no dependency to install,
audit or keep compatible on a Pi. The gate (edge/station/gate.py) reads every request in
one selector thread under a total deadline, answers the probes itself, and hands only
complete requests to worker threads, so slow or idle clients hold no thread and a
stalled browser stalls only its own worker, never the agent's loop. The handler checks
the Host header and backs off password guessers (edge/station/guard.py).

Routes: `/` page, `/station.css`, `/station.js`, `/station-parts.js`, `/api/state`, `/api/events` (SSE),
`/frame.jpg`, POST `/api/sample/start|end|id`, `/healthz`, `/readyz`, `/metrics`.
"""

from __future__ import annotations

import base64
import hmac
import html
import io
import json
import logging
import secrets
import socket
import ssl
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from urllib.parse import urlsplit

from edge.commands import COMMANDS, MAX_PAYLOAD, SAMPLE_ID, SAMPLE_ID_RULE, BadCommand, parse
from edge.errors import BadInput
from edge.messages import utc_now
from edge.station.gate import PROBE_PATHS, Gate
from edge.station.guard import AuthBackoff, host_names, host_ok

log = logging.getLogger(__name__)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/station.css": ("station.css", "text/css"),
          "/station.js": ("station.js", "text/javascript"),
          "/station-parts.js": ("station-parts.js", "text/javascript")}
OPEN_PATHS = PROBE_PATHS  # probes for systemd, Docker, load balancers: no secrets in them
REALM = 'Basic realm="leukedge station", charset="UTF-8"'
SSE_HEARTBEAT_S = 1.0  # a stream says something at least this often: the page goes NOT LIVE after 3 s of silence
SSE_MAX_S = 600.0  # a stream ends after this long; the browser reconnects (retry: 2 s), so no one holds one for ever


def read_password(path) -> bytes:
    """`user:password` or a bare password (user `station`), first line of the file, as bytes."""
    try:
        line = next(iter(path.read_text().splitlines()), "").strip()
    except OSError as exc:
        raise BadInput(f"ui.password_file {path}: cannot read ({exc.strerror})") from None
    if not line:
        raise BadInput(f"ui.password_file {path}: empty")
    return (line if ":" in line else f"station:{line}").encode()


def static_files() -> dict[str, bytes]:
    folder = resources.files("edge.station") / "static"
    return {name: (folder / name).read_bytes() for name, _ in STATIC.values()}


def page_html(template: bytes, csrf: str) -> bytes:
    """index.html with this run's CSRF token and the sample id rule of edge/commands.py (the page
    checks a typed id against the same pattern and says the same words)."""
    for key, value in (("csrf", csrf), ("sample_id_pattern", SAMPLE_ID), ("sample_id_rule", SAMPLE_ID_RULE)):
        template = template.replace(b"{{" + key.encode() + b"}}", html.escape(value).encode())
    return template


class StationServer:
    """The listening socket, the gate (edge/station/gate.py) in front of it, and what the handler needs."""

    def __init__(self, station, ui):
        self.station = station
        self.credentials = read_password(ui.password_file) if ui.password_file else None
        self.csrf = secrets.token_urlsafe(24)
        self.files = static_files()
        self.files["index.html"] = page_html(self.files["index.html"], self.csrf)
        self.hosts = host_names(ui.allowed_hosts)
        self.backoff = AuthBackoff()
        self.sse_cache: tuple[int, bytes] = (-1, b"")
        host, port = ui.address
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.tls = ui.cert_file is not None
        ctx = None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(ui.cert_file, ui.key_file)
            except (OSError, ssl.SSLError) as exc:
                self.socket.close()
                raise BadInput(f"ui.cert_file/key_file: cannot load ({exc})") from None
        h, p = self.server_address[:2]
        shown = f"[{h}]" if ":" in h else ("127.0.0.1" if h == "0.0.0.0" else h)
        self.url = f"{'https' if self.tls else 'http'}://{shown}:{p}/"
        self.gate = Gate(self.socket, ctx, self.handle, self.answer_probe, MAX_PAYLOAD)
        self.thread = self.gate.thread

    def handle(self, sock, addr, request: bytes) -> bool:
        """On a worker thread: answer one complete request; True to keep the connection."""
        handler = Handler(self, sock, addr, request, _SocketOut(sock))
        return not handler.close_connection

    def answer_probe(self, addr, request: bytes) -> bytes:
        """On the gate's thread: /healthz or /readyz, which read two numbers and never block."""
        out = io.BytesIO()
        Handler(self, None, addr, request, out)
        return out.getvalue()

    def sse_body(self, version: int, snap: dict) -> bytes:
        """One `data:` event per snapshot version, encoded once for every stream."""
        cached = self.sse_cache
        if cached[0] != version:
            cached = self.sse_cache = (version, b"data: " + json.dumps(snap).encode() + b"\n\n")
        return cached[1]

    def stop(self) -> None:
        self.gate.stop()


def _event(name: str, data: dict) -> bytes:
    """One named Server-Sent Event (the page's `addEventListener(name)`)."""
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"


class _SocketOut:
    """The handler's wfile: every write goes out whole (under the socket's write timeout)."""

    def __init__(self, sock):
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


def serve(station, ui) -> StationServer | None:
    """Start the page; a busy or forbidden port is one error line and None (the agent runs on)."""
    try:
        server = StationServer(station, ui)
    except OSError as exc:
        log.error("station page: cannot listen on %s (%s); the agent runs on without the page",
                  ui.listen, exc.strerror or exc)
        return None
    server.gate.start()
    log.info("station page at %s%s", server.url, "" if server.credentials else " (no password: loopback only)")
    if not ui.loopback and not server.tls:
        log.warning("station page on the network without HTTPS: its password crosses the LAN in clear "
                    "(set ui.cert_file and ui.key_file)")
    return server


def probe_bind(ui) -> str:
    """For `--check`: "ok" or why the page could not listen (the port is released again)."""
    host, port = ui.address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {ui.listen}: {exc.strerror or exc}"
    return "ok"


class Handler(BaseHTTPRequestHandler):
    server: StationServer
    server_version = "leukedge-station"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def __init__(self, server: StationServer, sock, addr, request: bytes, out) -> None:  # noqa: D107
        # the gate has read the whole request: parse and answer it once, never reading the socket
        self.server, self.request, self.connection, self.client_address = server, sock, sock, addr
        self.rfile, self.wfile = io.BytesIO(request), out
        self.close_connection = True
        self.handle_one_request()

    def log_message(self, fmt, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; frame-ancestors 'none'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode())

    def _authorized(self) -> bool:
        """A known Host, then the password (unless a probe), with a back-off for guessers."""
        if self.path.split("?")[0] in OPEN_PATHS:
            return True  # no secret, no state: a Kubernetes probe sends the pod's address as Host
        if not host_ok(self.headers.get("Host"), self.server.hosts):
            self.close_connection = True
            self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unknown Host: add the name to ui.allowed_hosts"})
            return False
        expected = self.server.credentials
        if expected is None:
            return True
        ip, backoff = self.client_address[0], self.server.backoff
        wait = backoff.locked(ip)
        if wait:
            self._too_many(wait)
            return False
        given = self.headers.get("Authorization", "")
        ok = False
        if given[:6].lower() == "basic ":
            try:
                ok = hmac.compare_digest(base64.b64decode(given[6:].strip(), validate=True), expected)
            except ValueError:
                ok = False
        if ok:
            backoff.succeeded(ip)
            return True
        if given and (wait := backoff.failed(ip)):  # a browser's first request carries no password: not a guess
            self._too_many(wait)
        else:
            self._send(HTTPStatus.UNAUTHORIZED, b'{"error":"password required"}', headers={"WWW-Authenticate": REALM})
        return False

    def _too_many(self, wait: float) -> None:
        self.close_connection = True
        self._send(HTTPStatus.TOO_MANY_REQUESTS, b'{"error":"too many wrong passwords from this address; wait"}',
                   headers={"Retry-After": str(max(1, round(wait)))})

    # ------------------------------------------------------------------ GET

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        if not self._authorized():
            return
        st = self.server.station
        if path in STATIC:
            name, ctype = STATIC[path]
            self._send(200, self.server.files[name], ctype)
        elif path == "/api/state":
            snap = st.fresh()
            if snap is None:
                self._json(503, {"error": "the agent's loop has not produced a state yet"})
            else:
                self._json(200, snap)
        elif path == "/api/events":
            self._events()
        elif path == "/frame.jpg":
            jpeg = st.frame_jpeg()
            if jpeg is None:
                self._json(404, {"error": "no field yet"})
            else:
                self._send(200, jpeg, "image/jpeg")
        elif path == "/healthz":
            alive, age = st.healthy()
            self._json(200 if alive else 503, {"alive": alive, "last_loop_s": round(age, 2)})
        elif path == "/readyz":
            ready = st.ready()
            self._json(200 if ready else 503, {"ready": ready})
        elif path == "/metrics":
            from edge.station.metrics import CONTENT_TYPE

            st.fresh()
            self._send(200, st.metrics.render(), CONTENT_TYPE)
        else:
            self._json(404, {"error": "not found"})

    do_HEAD = do_GET

    def _events(self) -> None:
        """Server-Sent Events: a `data:` line of state JSON per snapshot, a `heartbeat` event in the
        seconds without one, and a last `stopping` event when the agent shuts down.

        The page counts a snapshot, or a heartbeat while the loop is alive (as /healthz says), as
        a sign of life; three seconds without one, or a `stopping`, grey it over as NOT LIVE."""
        st = self.server.station
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        st.watch(+1)
        ends = time.monotonic() + SSE_MAX_S
        try:
            self.wfile.write(b"retry: 2000\n\n")
            version = -1
            while not st.closing and time.monotonic() < ends:
                snap, version = st.wait_newer(version, SSE_HEARTBEAT_S)
                if snap is not None:
                    self.wfile.write(self.server.sse_body(version, snap))
                elif not st.closing:
                    alive, age = st.healthy()
                    self.wfile.write(_event("heartbeat", {"ts": utc_now(), "alive": alive, "loop_age_s": round(age, 2)}))
            if st.closing:
                self.wfile.write(_event("stopping", {"ts": utc_now()}))
        except (OSError, ValueError):
            pass  # the browser went away or stalled past the write timeout
        finally:
            st.watch(-1)

    # ------------------------------------------------------------------ POST

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if not self._authorized():
            return
        name = path.removeprefix("/api/")
        if name not in COMMANDS:
            self._json(404, {"error": "not found"})
            return
        if not self._same_origin():
            self._json(403, {"error": "missing or wrong CSRF token or Origin"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_PAYLOAD:
            self.close_connection = True
            self._json(413, {"error": f"body must be 0-{MAX_PAYLOAD} bytes"})
            return
        try:
            cmd = parse(name, self.rfile.read(length))  # the same validation as an MQTT command
        except BadCommand as exc:
            self._json(400, {"error": str(exc)})
            return
        self.server.station.submit(cmd)
        self._json(202, {"accepted": cmd.name, "sample_id": cmd.sample_id})

    def _same_origin(self) -> bool:
        """The page's token in a header (a cross-site form cannot set one) and, when sent, a matching Origin."""
        token = self.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(token.encode(), self.server.csrf.encode()):
            return False
        origin = self.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == self.headers.get("Host", "")

    def do_PUT(self) -> None:  # noqa: N802
        self._json(405, {"error": "method not allowed"})

    do_DELETE = do_PATCH = do_PUT
