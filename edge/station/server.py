"""The station's HTTP server: the stdlib's ThreadingHTTPServer in a daemon thread.

Why the stdlib: the page needs a dozen routes, Server-Sent Events, basic auth and TLS,
all of which `http.server` and `ssl` do in a few lines, with no dependency to install,
audit or keep compatible on a Pi. One thread per connection keeps a stalled browser on
its own thread (with a socket timeout), never on the agent's loop.

Routes: `/` page, `/station.css`, `/station.js`, `/api/state`, `/api/events` (SSE),
`/frame.jpg`, POST `/api/sample/start|end|id`, `/healthz`, `/readyz`, `/metrics`.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import socket
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from edge.commands import COMMANDS, MAX_PAYLOAD, BadCommand, parse
from edge.errors import BadInput

log = logging.getLogger(__name__)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/station.css": ("station.css", "text/css"),
          "/station.js": ("station.js", "text/javascript")}
OPEN_PATHS = ("/healthz", "/readyz")  # probes for systemd, Docker, load balancers: no secrets in them
REALM = 'Basic realm="leukedge station", charset="UTF-8"'
SSE_KEEPALIVE_S = 15.0
MAX_CONNECTIONS = 64  # threads are cheap, but a LAN neighbour opening thousands must not eat the box's memory


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


class StationServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, station, ui):
        self.station = station
        self.credentials = read_password(ui.password_file) if ui.password_file else None
        self.csrf = secrets.token_urlsafe(24)
        self.files = static_files()
        self.files["index.html"] = self.files["index.html"].replace(b"{{csrf}}", self.csrf.encode())
        host, port = ui.address
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        self.tls = ui.cert_file is not None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(ui.cert_file, ui.key_file)
            except (OSError, ssl.SSLError) as exc:
                self.server_close()
                raise BadInput(f"ui.cert_file/key_file: cannot load ({exc})") from None
            # the handshake runs in the connection's own thread, not in accept()
            self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        h, p = self.server_address[:2]
        shown = f"[{h}]" if ":" in h else ("127.0.0.1" if h == "0.0.0.0" else h)
        self.url = f"{'https' if self.tls else 'http'}://{shown}:{p}/"
        self.thread = threading.Thread(target=self.serve_forever, name="station-http", daemon=True)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        """One thread per connection, at most MAX_CONNECTIONS at once; beyond that, closed at once."""
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve(station, ui) -> StationServer | None:
    """Start the page; a busy or forbidden port is one error line and None (the agent runs on)."""
    try:
        server = StationServer(station, ui)
    except OSError as exc:
        log.error("station page: cannot listen on %s (%s); the agent runs on without the page",
                  ui.listen, exc.strerror or exc)
        return None
    server.thread.start()
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
    timeout = 30  # a stalled client loses its connection, and only its own thread waited

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
        expected = self.server.credentials
        if expected is None or self.path.split("?")[0] in OPEN_PATHS:
            return True
        given = self.headers.get("Authorization", "")
        ok = False
        if given[:6].lower() == "basic ":
            try:
                ok = hmac.compare_digest(base64.b64decode(given[6:].strip(), validate=True), expected)
            except ValueError:
                ok = False
        if not ok:
            self._send(HTTPStatus.UNAUTHORIZED, b'{"error":"password required"}', headers={"WWW-Authenticate": REALM})
        return ok

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
        """Server-Sent Events: one `data:` line of state JSON per snapshot, a comment as keep-alive."""
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
        try:
            self.wfile.write(b"retry: 2000\n\n")
            version = -1
            while not st.closing:
                snap, version = st.wait_newer(version, SSE_KEEPALIVE_S)
                body = b": keep-alive\n\n" if snap is None else b"data: " + json.dumps(snap).encode() + b"\n\n"
                self.wfile.write(body)
        except (OSError, ValueError):
            pass  # the browser went away or stalled past the socket timeout
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
