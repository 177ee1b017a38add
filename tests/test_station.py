"""The station's server side on real agents with a real bundle: systemd notify from the
loop, /metrics through prometheus-client's own parser against the MQTT `stats` of a real
Mosquitto, basic auth and CSRF, TLS, health and readiness of a hung loop, a busy port, a
stalled browser that must not slow the loop, and the demo's page.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from edge.agent import Agent
from edge.config import load_config
from leukedge.agent_process import write_images
from leukedge.bundle_factory import make_small_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


def agent_cfg(tmp_path, bundle, src, url=None, **over):
    base = {"bundle": str(bundle), "device_id": "st1", "source": {"uri": str(src), "fps": "max"}, "gate": {"mode": "continuous"},
            "mqtt": {"url": url, "stats_interval_s": 0.5}, "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "result_log": {"path": None}, "ui": {"listen": "127.0.0.1:0"}, "drain_timeout_s": 5}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(None, base)


def start(agent: Agent) -> threading.Thread:
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while agent.station is None and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.station is not None, "agent did not start"
    return t


def get(url, auth=None, data=None, headers=None, context=None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


# --------------------------------------------------------------------------- systemd notify (tests/test_station_parts.py: the protocol)


@pytest.mark.slow
def test_agent_tells_systemd_ready_and_pings_the_watchdog(tmp_path, bundle, monkeypatch):
    path = tmp_path / "notify.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(path))
    srv.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "300000")
    frames = write_images(tmp_path / "frames", 8)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, ui={"listen": "off", "linger_s": 1.0}))
    t = start(agent)
    got = []
    try:
        while not got or got[-1] != b"STOPPING=1":
            got.append(srv.recv(256))
    finally:
        srv.close()
        t.join(30)
    assert got[0].startswith(b"READY=1\n") and b"litert" in got[0]
    assert got.count(b"WATCHDOG=1") >= 2  # from the loop, during the 1 s linger too


# --------------------------------------------------------------------------- metrics = stats


@pytest.mark.slow
def test_metrics_parse_and_match_mqtt_stats(tmp_path, bundle, broker):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_edge_agent import Subscriber

    frames = write_images(tmp_path / "frames", 10)
    (frames / "field-9999.jpg").write_bytes(b"not a jpeg at all")  # one bad frame, counted by reason
    sub = Subscriber(broker.port)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, broker.url, ui={"linger_s": 60}))
    t = start(agent)
    try:
        stats = wait_for(lambda: [s for s in sub.json("stats") if s["frames"]["total"] == 11
                                  and s["outbox"]["backlog"] == 0 and s["fields"] == 10], 60)
        assert stats, "no stats message after the folder was classified"
        status, headers, body = get(agent.station.url + "metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        info = sub.json("info")[0]
    finally:
        agent.request_stop()
        t.join(30)
        sub.close()
    s = stats[-1]
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for x in family.samples:
            samples[(x.name, tuple(sorted(x.labels.items())))] = x.value
    assert samples[("leukedge_frames_total", ())] == s["frames"]["total"] == 11
    assert samples[("leukedge_fields_total", ())] == s["fields"] == 10
    bad = {k.removeprefix("bad_"): v for k, v in s["frames"].items() if k.startswith("bad_")}
    counted = {lab[0][1]: v for (name, lab), v in samples.items() if name == "leukedge_bad_frames_total" and v}
    assert bad and counted == bad  # every other reason has its series at 0 (tests/test_station_metrics.py)
    results = {lab[0][1]: v for (name, lab), v in samples.items() if name == "leukedge_results_total"}
    assert sum(results.values()) == s["fields"] and set(results) <= {*info["labels"], "refer"}
    assert samples[("leukedge_outbox_backlog", ())] == s["outbox"]["backlog"] == 0
    assert samples[("leukedge_outbox_dropped_total", ())] == s["outbox"]["dropped"] == 0
    assert samples[("leukedge_mqtt_connected", ())] == 1 and s["mqtt"]["connected"]
    assert samples[("leukedge_invoke_seconds_count", ())] == 10
    (labels, one), = [(dict(lab), v) for (name, lab), v in samples.items() if name == "leukedge_info"]
    assert one == 1 and labels["model_sha256"] == info["bundle"]["model_sha256"]
    assert labels["backend"] == info["backend"] == s["backend"] and labels["device"] == "st1"


# --------------------------------------------------------------------------- security


@pytest.mark.slow
def test_lan_bind_needs_the_password_and_posts_need_the_token(tmp_path, bundle):
    pw = tmp_path / "station.pw"
    pw.write_text("tech:correct horse\n")
    frames = write_images(tmp_path / "frames", 6)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, source={"loop": True, "fps": 20.0},
                            ui={"listen": "0.0.0.0:0", "password_file": str(pw)}))
    t = start(agent)
    url, good = agent.station.url, "tech:correct horse"
    try:
        for auth in (None, "tech:wrong", "station:correct horse", "tech:correct horse "):
            status, headers, _ = get(url, auth)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), auth
        assert get(url + "metrics")[0] == get(url + "api/state", "x:y")[0] == 401
        assert get(url + "healthz")[0] == 200  # probes stay open: no secret in them
        status, _, page = get(url, good)
        assert status == 200 and b"Screening aid, not a diagnosis" in page
        token = page.split(b'name="csrf-token" content="')[1].split(b'"')[0].decode()
        state = json.loads(wait_for(lambda: get(url + "api/state", good)[2]))
        assert state["outbox"]["disk_free_mb"] > 0 and state["page"] == {"listen": "0.0.0.0:0", "tls": False, "lan": True}
        assert {"kind": "insecure"}.items() <= state["warnings"][-1].items()  # LAN without TLS: said on the page
        start_cmd = url + "api/sample/start"
        assert get(start_cmd, good, b'{"sample_id":"A-1"}')[0] == 403  # no token
        assert get(start_cmd, good, b'{"sample_id":"A-1"}', {"X-CSRF-Token": token, "Origin": "http://evil.example"})[0] == 403
        assert get(start_cmd, None, b'{"sample_id":"A-1"}', {"X-CSRF-Token": token})[0] == 401
        status, _, body = get(start_cmd, good, b'{"sample_id":"bad id; rm -rf"}', {"X-CSRF-Token": token})
        assert status == 400 and "sample_id" in json.loads(body)["error"]  # edge.commands' validation
        assert get(url + "api/sample/start?sample_id=A-1", good)[0] == 404  # a GET never changes state
        assert get(start_cmd, good, b"x" * 2000, {"X-CSRF-Token": token})[0] == 413
        status, _, body = get(start_cmd, good, b'{"sample_id":"A-1"}', {"X-CSRF-Token": token})
        assert status == 202 and json.loads(body) == {"accepted": "sample/start", "sample_id": "A-1"}
        assert wait_for(lambda: json.loads(get(url + "api/state", good)[2])["sample"]["sample_id"] == "A-1", 10)
    finally:
        agent.request_stop()
        t.join(30)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_https(tmp_path, bundle):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    frames = write_images(tmp_path / "frames", 4)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, ui={"cert_file": str(cert), "key_file": str(key), "linger_s": 30}))
    t = start(agent)
    try:
        url = agent.station.url
        assert url.startswith("https://127.0.0.1:")
        status, _, body = get(url + "healthz", context=ssl.create_default_context(cafile=str(cert)))
        assert status == 200 and json.loads(body)["alive"]
        with pytest.raises(urllib.error.URLError):  # an untrusted certificate is refused by the client
            get(url + "healthz", context=ssl.create_default_context())
    finally:
        agent.request_stop()
        t.join(30)


# --------------------------------------------------------------------------- health, busy port, stalled client


class HungCamera:
    """A camera driver that hangs in read() until released (the case systemd's watchdog is for)."""

    def __init__(self, frames):
        import cv2

        self.images = [cv2.imread(str(p))[..., ::-1].copy() for p in sorted(frames.glob("*.jpg"))]
        self.release = threading.Event()
        self.state, self.n = "open", 0

    def read(self):
        from edge.sources.base import Frame

        self.release.wait()
        self.n += 1
        return Frame(self.images[self.n % len(self.images)], self.n, f"hung#{self.n}", 0.0)

    def close(self):
        self.release.set()

    def stats(self) -> dict:
        return {"state": self.state, "reopens": 0, "eofs": 0, "failures": 0, "last_error": None}


@pytest.mark.slow
def test_health_and_readiness_follow_the_loop(tmp_path, bundle):
    frames = write_images(tmp_path / "frames", 4)
    cam = HungCamera(frames)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, ui={"alive_s": 1.0}), source=cam)
    t = start(agent)
    url = agent.station.url
    try:
        assert get(url + "readyz")[0] == 503  # model loaded, but no frame yet
        assert wait_for(lambda: get(url + "healthz")[0] == 503, 10)  # the loop hangs in the camera
        cam.release.set()
        assert wait_for(lambda: get(url + "healthz")[0] == 200, 10)
        assert wait_for(lambda: get(url + "readyz")[0] == 200, 10)
    finally:
        agent.request_stop()
        cam.release.set()
        t.join(30)


@pytest.mark.slow
def test_busy_port_is_one_line_and_the_agent_runs_on(tmp_path, bundle, caplog, capsys):
    from leukedge.cli import main

    frames = write_images(tmp_path / "frames", 6)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = Agent(agent_cfg(tmp_path, bundle, frames, ui={"listen": f"127.0.0.1:{port}"}))
        assert agent.run() == 0
        lines = [r for r in caplog.records if r.name == "edge.station.server" and r.levelname == "ERROR"]
        assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0].getMessage()
        assert agent.parts.stats.fields == 6 and agent.station.server is None
        rc = main(["agent", "--bundle", str(bundle), "--source", str(frames), "--mqtt", "off", "--ui",
                   f"127.0.0.1:{port}", "--outbox", str(tmp_path / "c.sqlite"), "--check"])
        assert rc == 1 and f"page      FAILED: http://127.0.0.1:{port}/" in capsys.readouterr().out


@pytest.mark.slow
def test_a_stalled_browser_does_not_hold_up_the_loop(tmp_path, bundle):
    frames = write_images(tmp_path / "frames", 8)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, source={"loop": True}, max_frames=1500))
    t = start(agent)
    host, port = agent.station.server.server_address[:2]
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # and it never reads
    stalled.connect((host, port))
    stalled.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        t.join(120)
        assert not t.is_alive() and agent.parts.stats.frames == 1500
        assert agent.station.watchers <= 1
    finally:
        stalled.close()


@pytest.mark.slow
def test_demo_agent_keeps_its_page_up_after_the_video_until_told(tmp_path, bundle, capsys):
    """`leukedge demo`'s agent step: the page's URL is printed, the summary's facts are gathered
    once the video is read, and the page stays up (the agent waits) until the demo lets it go;
    then the agent exits 0."""
    from leukedge.demoagent import DemoAgent
    from trainer.synth.video import write_video

    meta = write_video(tmp_path / "v.mp4", n_fields=3, size=320, seed=2, fps=15)
    with DemoAgent(bundle, tmp_path / "v.mp4", tmp_path / "work", offline=True) as agent:
        assert f"station page: {agent.url}" in capsys.readouterr().out
        run = agent.wait_video()
        assert "agent ran offline" in run["lines"][0] and run["mode"] == "offline"

        def fields():
            status, _, body = get(agent.url + "api/state")
            return status == 200 and json.loads(body)["counts"]["fields"] == len(meta["fields"])

        assert wait_for(fields, 30), "the page did not show the whole video's fields after it"
        time.sleep(1.0)
        assert agent.proc.poll() is None  # still serving: the page waits for the person
        agent.hold_page(0.5)
        assert "stays up" in capsys.readouterr().out
        proc = agent.proc
    assert proc.returncode == 0
    with pytest.raises(urllib.error.URLError):
        get(agent.url + "api/state")


@pytest.mark.slow
def test_model_switched_while_running_is_bannered(tmp_path, bundle):
    frames = write_images(tmp_path / "frames", 6)
    agent = Agent(agent_cfg(tmp_path, bundle, frames, source={"loop": True, "fps": 20.0}))
    t = start(agent)
    url = agent.station.url

    def state():
        status, _, body = get(url + "api/state")
        return json.loads(body) if status == 200 else None

    try:
        first = wait_for(state)
        assert first["model_change"] is None  # a first run on this outbox: nothing to compare with
        p = agent.parts
        other = next(e for e in p.manifest.files if e.sha256 != p.entry.sha256)
        p.entry = other  # what a bundle switch does between two frames: new parts, same loop
        now = wait_for(lambda: (state() or {}).get("model_change"), 10)
        assert now["old"]["sha256"] == first["model"]["sha256"] and now["new"]["sha256"] == other.sha256
        s = state()
        assert s["model"]["sha256"] == other.sha256 and "model_change" in [w["kind"] for w in s["warnings"]]
    finally:
        agent.request_stop()
        t.join(30)
    assert json.loads((tmp_path / "outbox.model.json").read_text())["sha256"] == other.sha256  # recorded


@pytest.mark.slow
def test_a_disk_that_refuses_writes_is_on_the_page(tmp_path, bundle):
    """The agent as its own process under RLIMIT_FSIZE (the kernel refuses to grow any file, as on a
    full card, without root): the page warns, /metrics says so, and classification goes on."""
    import os
    import resource
    import sys

    import yaml

    from leukedge.agent_process import CLI, agent_config
    from tests.agent_proc import ROOT

    frames = write_images(tmp_path / "frames", 12)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump(agent_config(tmp_path, bundle, frames, ui={"listen": "127.0.0.1:0"})))
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    out: list[bytes] = []
    proc = subprocess.Popen([sys.executable, "-c", CLI, "agent", "--config", str(cfg)], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, hard)))
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, b"")), daemon=True)
    reader.start()
    try:
        url = wait_for(lambda: next((m.group(1).decode() for line in list(out)
                                     if (m := re.search(rb"station page at (\S+)", line))), None), 120)
        assert url, b"".join(out)[-2000:]

        def state():
            try:
                status, _, body = get(url + "api/state")
            except urllib.error.URLError:
                return None
            return json.loads(body) if status == 200 else None

        s = wait_for(lambda: (x := state()) and any(w["kind"] == "disk" for w in x["warnings"]) and x, 120)
        assert s, b"".join(out)[-2000:]
        text = next(w["text"] for w in s["warnings"] if w["kind"] == "disk")
        assert text.startswith("Cannot write to the disk") and s["outbox"]["in_memory"] > 0
        fields = s["counts"]["fields"]
        assert wait_for(lambda: (state() or {"counts": {"fields": 0}})["counts"]["fields"] > fields, 30)
        _, _, body = get(url + "metrics")
        assert b"leukedge_disk_write_failing 1.0" in body
    finally:
        proc.terminate()
        proc.wait(60)
