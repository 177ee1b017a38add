"""The station's parts without an agent: systemd's notify protocol on a real AF_UNIX socket,
the `ui` config and the refused LAN bind, the page's pooling and recent lists, the model
change across restarts, the disk-space warning.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from edge.config import UIConfig
from edge.station.notify import Notifier


def test_notify_protocol_on_a_real_datagram_socket(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(str(path))
        srv.settimeout(2)
        now = [100.0]
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"}, clock=lambda: now[0])
        assert n.watchdog_s == 1.0  # a third of WatchdogSec
        assert n.ready("classifying") and srv.recv(256) == b"READY=1\nSTATUS=classifying"
        assert n.ping() and srv.recv(256) == b"WATCHDOG=1"
        assert not n.ping()  # within the period: nothing sent
        now[0] += 1.01
        assert n.ping() and srv.recv(256) == b"WATCHDOG=1"
        assert n.stopping() and srv.recv(256) == b"STOPPING=1"
    # the socket is gone: False, never an exception
    assert not n.send("WATCHDOG=1")


def test_notify_abstract_socket_and_no_systemd():
    name = f"leukedge-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind("\0" + name)
        srv.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready() and srv.recv(64) == b"READY=1"
    off = Notifier({})
    assert not off.enabled and not off.ready() and not off.ping()
    # the watchdog was meant for another process (WATCHDOG_PID): do not ping
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_ui_config_and_lan_bind_refused(tmp_path, capsys):
    from leukedge.cli import main

    assert UIConfig(listen="off").address is None and UIConfig().address == ("127.0.0.1", 8080)
    assert UIConfig(listen="[::1]:9000").loopback and not UIConfig(listen="0.0.0.0:1", password_file=tmp_path).loopback
    args = ["agent", "--bundle", str(tmp_path), "--mqtt", "off"]
    assert main([*args, "--ui", "0.0.0.0:8080"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "field ui: listen 0.0.0.0:8080 is reachable from the network" in err[0]
    assert "password_file" in err[0]
    assert main([*args, "--ui", "8080"]) == 2
    assert "field ui.listen: '8080' is not HOST:PORT" in capsys.readouterr().err
    cfg = tmp_path / "a.yaml"
    cfg.write_text(f"bundle: {tmp_path}\nui: {{listen: '10.0.0.5:8080', password_file: {tmp_path}/pw, "
                   f"cert_file: {tmp_path}/c.pem}}\n")
    assert main(["agent", "--config", str(cfg)]) == 2
    assert "cert_file and key_file go together" in capsys.readouterr().err


def test_page_pools_a_sample_like_the_sample_message(tmp_path):
    """The page's running pooled probabilities equal the `sample` message's, across snapshots and samples;
    the recent lists keep 20 fields and 10 samples, newest first; a model change across restarts is shown."""
    import numpy as np

    from edge.config import SampleConfig
    from edge.samples import SamplePool
    from edge.station.state import StationState

    labels = ["Benign", "Early", "Pre", "Pro"]
    info = {"device": "d", "agent_version": "0", "backend": "litert-cpu", "labels": labels,
            "thresholds": {"refer_below": 0.5}, "bundle": {"name": "m1", "model_sha256": "a" * 64}}
    record = tmp_path / "outbox.model.json"
    assert StationState(info, record).model_change is None  # first run: nothing to compare with
    state = StationState(info, record)
    assert state.model_change is None  # same model again
    pool = SamplePool(SampleConfig(), "d", 1, labels, 0.5, "a" * 64)
    rng = np.random.default_rng(0)
    for sample in range(12):
        pool.open(f"S-{sample}")
        for k in range(1, 8):
            pool.add(k, rng.dirichlet(np.ones(4)).astype(np.float32))
            if k % 3 == 0:
                shown = state._open_sample(pool)
        shown = state._open_sample(pool)
        msg = pool.close("command")
        assert shown["n_fields"] == msg["n_fields"] == 7 and shown["decision"] == msg["decision"]
        assert shown["probs"] == pytest.approx(msg["probs"], abs=1e-4)
        state.on_message("sample", msg)
    assert [s["sample_id"] for s in state.samples] == [f"S-{i}" for i in range(11, 1, -1)]
    assert state.last_sample["sample_id"] == "S-11"
    for seq in range(1, 26):
        state.on_message("result", {"ts": "t", "seq": seq, "field": 1, "sample_id": None, "label": "Pre",
                                    "decision": "refer" if seq % 2 else "Pre", "latency_ms": {"invoke": seq / 2}})
    assert [f["seq"] for f in state.fields] == list(range(25, 5, -1)) and state.decisions == {"refer": 13, "Pre": 12}
    counts, total = state.invoke.copy()  # 0.5 .. 12.5 ms into the Prometheus buckets
    assert sum(counts) == 25 and counts[:4] == [1, 1, 2, 6] and total == pytest.approx(sum(range(1, 26)) / 2e3)
    moved = {**info, "bundle": {"name": "m2", "model_sha256": "b" * 64}}
    change = StationState(moved, record).model_change
    assert change["old"]["name"] == "m1" and change["new"]["short"] == "b" * 12


def test_disk_space_warning_thresholds(tmp_path):
    from edge.station.state import disk_low, disk_space

    free, total = disk_space(tmp_path)  # the real file system
    assert 0 < free <= total
    assert disk_space(tmp_path / "missing") is None
    gb = 2**30
    assert disk_low(99 * 2**20, 64 * gb) and disk_low(1 * gb, 64 * gb) and not disk_low(4 * gb, 64 * gb)



def test_page_assets_ship_in_the_package_and_need_no_internet():
    from importlib import resources

    folder = resources.files("edge.station") / "static"
    files = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
    assert set(files) == {"index.html", "station.css", "station.js", "station-parts.js"}
    assert sum(map(len, files.values())) < 100_000
    for name, body in files.items():  # no CDN, no web font, no absolute URL of any kind
        assert b"http://" not in body and b"https://" not in body and b"@import" not in body, name
        assert b'src="//' not in body and b'href="//' not in body, name


GOOD_IDS = ["S", "SLIDE-0042", "lab:42.a", "H 2024/00417", "BM_12/3 a", "x" * 64, "9 9"]
BAD_IDS = ["", " lead", "trail ", "-dash-first", "/root", "x" * 65, "a<b", "H#1", "a\tb", "a\nb", "Jane Doe, DOB 1970",
           "name\n", "caf\u00e9", "a\\b", "a;b"]


@pytest.mark.parametrize("sid", GOOD_IDS)
def test_sample_id_rule_takes_accession_numbers(sid):
    from edge.commands import parse, valid_sample_id

    assert valid_sample_id(sid)
    payload = json.dumps({"sample_id": f"  {sid} \n"}).encode()  # a scanner's padding is trimmed
    assert parse("sample/start", payload).sample_id == sid == parse("sample/id", payload).sample_id


@pytest.mark.parametrize("sid", BAD_IDS)
def test_sample_id_rule_refuses_the_rest_and_says_what_is_allowed(sid):
    from edge.commands import SAMPLE_ID_RULE, BadCommand, parse, valid_sample_id

    assert not valid_sample_id(sid)
    if valid_sample_id(sid.strip()):  # " lead", "trail ", "name\n": fine once trimmed, as parse() trims
        assert parse("sample/id", json.dumps({"sample_id": sid}).encode()).sample_id == sid.strip()
        return
    with pytest.raises(BadCommand) as err:
        parse("sample/start", json.dumps({"sample_id": sid}).encode())
    assert SAMPLE_ID_RULE in str(err.value) and "- _ . / :" in SAMPLE_ID_RULE


def test_page_is_served_the_sample_id_rule_of_the_commands():
    import html

    from edge.commands import SAMPLE_ID, SAMPLE_ID_RULE
    from edge.station.server import page_html, static_files

    page = page_html(static_files()["index.html"], "tok").decode()
    assert f'content="{html.escape(SAMPLE_ID)}"' in page and f'content="{html.escape(SAMPLE_ID_RULE)}"' in page
    assert 'content="tok"' in page and "{{" not in page
    assert 'pattern="' not in page  # no browser bubble: the page says what is allowed itself


def test_source_kind_names_the_source_and_the_banner_says_what_to_check(tmp_path):
    from edge.station.state import SOURCE_NAMES, source_down, source_kind

    (tmp_path / "frames").mkdir()
    kinds = {"picam:0": "camera", "cv:1": "camera", "/dev/video0": "camera", "rtsp://u:***@cam:554/live?token=***": "stream",
             str(tmp_path / "frames"): "folder", str(tmp_path / "gone"): "folder", str(tmp_path / "smear.mp4"): "video",
             str(tmp_path / "one.png"): "image"}
    assert {uri: source_kind(uri) for uri in kinds} == kinds
    assert SOURCE_NAMES["video"] == "Video file" and SOURCE_NAMES["stream"] == "Network stream"
    assert source_down("camera", "cv:0") == ("No picture from the camera: check its cable and power, and that no other "
                                             "program is using it; the box retries by itself.")
    assert "smear.mp4 is still there and readable" in source_down("video", "smear.mp4")
    stream = source_down("stream", "rtsp://admin:***@cam:554/live?token=***")
    assert "rtsp://cam:554/live;" in stream and "admin" not in stream and "token" not in stream and "***" not in stream
    assert "(see Details)" in source_down("stream", "rtsp://[::1/x")  # an unreadable URL: none of it shown


def test_slide_cut_off_falls_back_to_the_field_one():
    from edge.station.state import _model

    info = {"backend": "litert-cpu", "labels": ["A"], "bundle": {"name": "m", "model_sha256": "a" * 64},
            "thresholds": {"refer_below": 0.62}}
    assert (_model(info)["refer_below"], _model(info)["sample_refer_below"]) == (0.62, 0.62)  # older bundles
    info["thresholds"]["sample_refer_below"] = None
    assert _model(info)["sample_refer_below"] == 0.62
    info["thresholds"]["sample_refer_below"] = 0.81
    assert (_model(info)["refer_below"], _model(info)["sample_refer_below"]) == (0.62, 0.81)


def bare_station(tmp_path):
    """A station with no agent behind it (its loop never ticks), and its page config."""
    from edge.station.station import Station

    info = {"device": "d", "agent_version": "0", "backend": "b", "labels": ["A"], "thresholds": {},
            "bundle": {"name": "m", "model_sha256": "a" * 64}}
    ui = UIConfig(listen="127.0.0.1:0")
    return Station(ui, info, tmp_path / "model.json"), ui


def test_server_caps_its_connections(tmp_path):
    """Idle connections beyond MAX_PENDING close the oldest at once (never the newest, which may
    be a probe); the rest hold no thread and the server answers on."""
    import json
    import urllib.request

    from edge.station.gate import MAX_PENDING
    from edge.station.server import serve

    station, ui = bare_station(tmp_path)
    station.server = server = serve(station, ui)
    host, port = server.server_address[:2]
    idle = []
    try:
        for _ in range(MAX_PENDING + 1):
            idle.append(socket.create_connection((host, port)))
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # the oldest was closed to make room
        assert server.gate.dropped["evicted"] == 1
    finally:
        for s in idle:
            s.close()

    def healthz():
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as r:
                return json.loads(r.read())["alive"]
        except OSError:
            return False

    deadline = time.monotonic() + 10
    while not healthz() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert healthz()
    station.stop()


def test_event_stream_beats_every_second_and_says_stopping(tmp_path):
    """The page's stream is never silent for more than about a second (a `heartbeat` event carrying
    the loop's health when no snapshot is new), and a stopping station ends every stream with a
    `stopping` event before it closes the server."""
    import json

    from edge.station.server import serve

    station, ui = bare_station(tmp_path)
    station.server = serve(station, ui)
    host, port = station.server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got, t0, beats = b"", time.monotonic(), []
        while len(beats) < 2:
            got += s.recv(4096)
            beats = [line for line in got.split(b"\n\n") if line.startswith(b"event: heartbeat\ndata: ")]
        waited = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 200") and b"text/event-stream" in got
        assert waited < 3.5, f"two heartbeats took {waited:.1f} s"
        beat = json.loads(beats[0].split(b"data: ", 1)[1])
        assert beat["alive"] is True and beat["loop_age_s"] >= 0 and beat["ts"].endswith("Z")
        t1 = time.monotonic()
        station.stop()
        assert time.monotonic() - t1 < 2.0  # the stream said `stopping` at once, no waiting out the bound
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
    last = rest.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(b"event: stopping\ndata: ") and json.loads(last.split(b"data: ", 1)[1])["ts"].endswith("Z")
