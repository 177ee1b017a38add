"""Hostile clients of the station page, through real sockets against the real server on
127.0.0.1: slow and idle connections and SSE streams that used to hold every slot (and
`/healthz` with them), DNS rebinding (a foreign Host header), password guessing, resets
and half-sent requests that each wrote a traceback, and a bounded load of all of these.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest

from edge.config import UIConfig
from edge.station.metrics import StationMetrics
from edge.station.server import serve
from edge.station.station import Station
from leukedge.station_load import Load, probe_healthz

INFO = {"device": "d", "agent_version": "0", "backend": "b", "labels": ["A"], "thresholds": {},
        "bundle": {"name": "m", "model_sha256": "a" * 64}}


@pytest.fixture
def page(tmp_path):
    """A real station server on a free port; `page(**ui)` starts one, all stopped at the end."""
    started = []

    def make(**ui):
        cfg = UIConfig(**{"listen": "127.0.0.1:0", **ui})
        station = Station(cfg, INFO, tmp_path / "model.json")
        station.metrics = StationMetrics(station)
        station.server = serve(station, cfg)
        started.append(station)
        return station

    yield make
    for station in started:
        station.stop()


def request(url, path="", auth=None, headers=None, data=None, timeout=10):
    """(status, headers, body); HTTP errors are answers too."""
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def port_of(station) -> int:
    return station.server.server_address[1]


def closed_by_server(s: socket.socket, within_s: float) -> bool:
    """True when the server closes `s` within `within_s`, while we keep sending a byte every 0.5 s."""
    end = time.monotonic() + within_s
    s.settimeout(0.5)
    while time.monotonic() < end:
        try:
            s.send(b"X")
            if s.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_slow_clients_and_streams_cannot_lock_out_healthz(page):
    station = page()
    url, port = station.url, port_of(station)
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    streams = []
    try:
        for s in slow:
            s.send(b"G")
        time.sleep(0.5)
        assert request(url, "healthz", timeout=5)[0] == 200  # while all 100 are connected
        # the header deadline is total: a byte every half second does not extend it
        assert closed_by_server(slow[0], within_s=12), "a slow client kept its connection"
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            streams.append(s)
        time.sleep(0.5)
        firsts = []
        for s in streams:
            s.settimeout(5)
            firsts.append(s.recv(64))
        opened = sum(f.startswith(b"HTTP/1.1 200") for f in firsts)
        refused = sum(f.startswith(b"HTTP/1.1 503") for f in firsts)
        assert 0 < opened <= 16 and opened + refused == 64, (opened, refused)  # streams have their own cap
        for _ in range(5):  # probes and the page itself still answer
            status, _, body = request(url, "healthz", timeout=5)
            assert status == 200 and json.loads(body)["alive"]
            assert request(url, "", timeout=5)[0] == 200
    finally:
        for s in slow + streams:
            s.close()


def test_foreign_host_header_gets_no_page_token_or_state(page):
    station = page(allowed_hosts=["scope-01.clinic.lan"])
    url, port = station.url, port_of(station)
    evil = {"Host": f"evil.example:{port}"}
    for path in ("", "api/state", "station.js", "metrics"):
        status, _, body = request(url, path, headers=evil)
        assert status == 421 and b"csrf" not in body and b"sample" not in body, (path, status, body[:200])
    token = station.server.csrf
    status, _, _ = request(url, "api/sample/start", data=b'{"sample_id":"REBOUND-1"}',
                           headers={**evil, "Origin": f"http://evil.example:{port}", "X-CSRF-Token": token})
    assert status == 421 and not station.commands  # nothing reached the loop
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"scope-01.clinic.lan:{port}",
                 f"[::1]:{port}", "10.1.2.3"):
        assert request(url, "", headers={"Host": host})[0] == 200, host
    assert request(url, "healthz", headers=evil)[0] == 200  # a probe carries no secret; k8s sends the pod's IP


def test_password_guessing_is_slowed_down_logged_once_and_counted(page, tmp_path, caplog):
    from prometheus_client.parser import text_string_to_metric_families

    pw = tmp_path / "station.pw"
    pw.write_text("tech:correct horse\n")
    station = page(password_file=str(pw))
    url = station.url
    caplog.set_level(logging.WARNING, logger="edge.station.server")
    statuses = [request(url, "api/state", auth=f"tech:guess-{i}")[0] for i in range(200)]
    assert statuses.count(401) <= 10 and statuses.count(429) >= 180, statuses.count(401)
    status, headers, _ = request(url, "api/state", auth="tech:correct horse")
    assert status == 429 and int(headers["Retry-After"]) >= 1  # locked out: not even the right one is checked
    lines = [r.getMessage() for r in caplog.records if "wrong passwords" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "correct horse" not in lines[0]
    time.sleep(int(headers["Retry-After"]) + 0.2)
    status, _, body = request(url, "metrics", auth="tech:correct horse")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    failures = families["leukedge_ui_auth_failures"].samples[0].value
    assert statuses.count(401) < failures < 20  # the guesses that started a lock count; those during one go unchecked
    assert request(url, "api/state", auth="tech:wrong")[0] == 401  # a success starts the count afresh


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    s.close()


def test_resets_and_half_sent_requests_log_one_line_not_tracebacks(page, capfd, caplog):
    station = page()
    port = port_of(station)
    caplog.set_level(logging.DEBUG)
    for i in range(150):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: " + b"y" * (i % 7))
        time.sleep(0.002)
        _reset(s)
    time.sleep(1.0)
    assert request(station.url, "healthz")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err[:2000]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING and "dropped a connection" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    assert station.server.gate.dropped["reset"] >= 100


def test_healthz_answers_under_a_bounded_load(page):
    """Many slow clients, SSE clients and oversized requests at once for 6 s: every probe answers."""
    station = page()
    with Load(port_of(station), slow=150, streams=40) as load:
        time.sleep(1.0)
        latencies = probe_healthz(station.url, seconds=6.0, timeout=10.0)
    assert len(latencies) >= 10
    assert load.counts["stream_opens"] > 0 and load.counts["stream_refused"] > 0
    assert load.counts["oversized_answers"] > 0
    assert request(station.url, "")[0] == 200  # the server outlived the load
