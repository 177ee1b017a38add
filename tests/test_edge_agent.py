"""The agent end to end against a real Mosquitto on a free port, with a real converted bundle.

Only in-process runs use threads; the Last Will and SIGTERM tests run the agent as a
subprocess (`python -m leukedge.cli agent`) and kill or signal it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.agent import Agent
from edge.config import load_config
from edge.messages import DEFAULT_PREFIX, InfoMessage, ResultMessage, SampleMessage, StatsMessage
from edge.sources import END
from leukedge.bundle_factory import make_small_bundle
from tests.broker import Broker, mosquitto_available

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def folder(tmp_path):
    """Six distinct synthetic smear fields as JPEG files."""
    from trainer.synth.fields import render_field

    rng = np.random.default_rng(0)
    out = tmp_path / "frames"
    out.mkdir()
    for i, label in enumerate(["Benign", "Early", "Pre", "Pro", "Benign", "Pre"]):
        cv2.imwrite(str(out / f"f{i:02d}.jpg"), render_field(rng, label, 96)[..., ::-1])
    return out


class Subscriber:
    """Collects everything under leukedge/# (a persistent session, so a broker restart loses nothing)."""

    def __init__(self, port: int, client_id: str = "test-sub", clean: bool = True):
        self.messages: list[tuple[str, bool, bytes]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{DEFAULT_PREFIX}/#", qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.retain, msg.payload))

    def on(self, suffix: str) -> list[tuple[bool, bytes]]:
        with self.lock:
            return [(r, p) for t, r, p in self.messages if t.endswith("/" + suffix)]

    def json(self, suffix: str) -> list[dict]:
        return [json.loads(p) for _, p in self.on(suffix)]

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def config(tmp_path, bundle, uri, url=None, **over):
    base = {"bundle": str(bundle), "device_id": "box1", "source": {"uri": str(uri), "fps": "max"}, "mqtt": {"url": url},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")}, "result_log": {"path": str(tmp_path / "r.jsonl")},
            "drain_timeout_s": 10, "ui": {"listen": "off"}}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(None, base)


def run_in_thread(agent: Agent) -> threading.Thread:
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    return t


def test_video_run_results_samples_info_match_schema(tmp_path, bundle, broker):
    from trainer.synth.video import write_video

    meta = write_video(tmp_path / "v.mp4", n_fields=4, size=320, seed=1, fps=15)
    sub = Subscriber(broker.port)
    cfg = config(tmp_path, bundle, tmp_path / "v.mp4", broker.url, sample={"fields_per_sample": 2})
    assert Agent(cfg).run() == 0
    assert sub.wait(lambda: len(sub.on("sample")) == 2 and sub.on("status")[-1][1] == b"offline")
    results = [ResultMessage.model_validate(m) for m in sub.json("result")]
    samples = [SampleMessage.model_validate(m) for m in sub.json("sample")]
    assert len(results) == len(meta["fields"]) == 4  # each still sharp field exactly once
    assert [r.seq for r in results] == [1, 2, 3, 4] and len({r.id for r in results}) == 4
    assert [r.field for r in results] == [1, 2, 1, 2] and results[0].sample_id == samples[0].sample_id
    assert all(set(r.probs) == {"Benign", "Early", "Pre", "Pro"} for r in results)
    assert all(r.decision in (r.label, "refer") for r in results)
    assert [s.n_fields for s in samples] == [2, 2] and samples[0].closed_by == "fields"
    StatsMessage.model_validate(sub.json("stats")[-1])
    sub.close()
    late = Subscriber(broker.port, "late")  # retained: info and status reach a late subscriber
    assert late.wait(lambda: late.on("info") and late.on("status"))
    info = InfoMessage.model_validate(late.json("info")[0])
    assert late.on("info")[0][0] and info.backend == "litert-cpu" and info.device == "box1"
    assert late.on("status")[0] == (True, b"offline")
    assert [json.loads(line)["type"] for line in (tmp_path / "r.jsonl").read_text().splitlines()].count("result") == 4
    late.close()


def test_commands_work_and_retained_are_ignored(tmp_path, bundle, broker, folder):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("leukedge/box1/cmd/sample/start", b'{"sample_id": "STALE"}', qos=1, retain=True).wait_for_publish()
    sub = Subscriber(broker.port)
    cfg = config(tmp_path, bundle, folder, broker.url, source={"loop": True, "fps": 30},
                 gate={"mode": "continuous"}, sample={"auto_open": False})
    agent = Agent(cfg)
    thread = run_in_thread(agent)
    assert sub.wait(lambda: len(sub.on("result")) >= 3)
    assert all(r["sample_id"] is None for r in sub.json("result"))  # the retained start was ignored
    pub.publish("leukedge/box1/cmd/sample/start", b'{"sample_id": "LAB-1"}', qos=1).wait_for_publish()
    assert sub.wait(lambda: sum(r["sample_id"] == "LAB-1" for r in sub.json("result")) >= 3)
    pub.publish("leukedge/box1/cmd/sample/start", b'{"sample_id": "LAB-1; rm -rf /"}', qos=1).wait_for_publish()
    pub.publish("leukedge/box1/cmd/sample/end", b"", qos=1).wait_for_publish()
    assert sub.wait(lambda: sub.json("sample"))
    agent.request_stop()
    thread.join(30)
    sample = SampleMessage.model_validate(sub.json("sample")[0])
    assert sample.sample_id == "LAB-1" and sample.closed_by == "command" and sample.n_fields >= 3
    assert all(m["sample_id"] != "STALE" for m in sub.json("result") + sub.json("sample"))
    p = agent.parts.publisher
    assert (p.cmd_retained, p.cmd_bad) == (1, 1) and p.cmd_ok == 2
    pub.publish("leukedge/box1/cmd/sample/start", b"", retain=True).wait_for_publish()  # clear the retained one
    pub.loop_stop()
    sub.close()


def test_broker_restart_mid_stream_loses_nothing(tmp_path, bundle, folder):
    if not mosquitto_available():
        pytest.skip("mosquitto binary not installed")
    store = tmp_path / "store"
    store.mkdir()
    broker = Broker(tmp_path / "broker", extra_conf=f"persistence true\npersistence_location {store}/\n").start()
    try:
        sub = Subscriber(broker.port, "restart-sub", clean=False)
        assert sub.wait(lambda: sub.c.is_connected())
        cfg = config(tmp_path, bundle, folder, broker.url, source={"loop": True, "fps": 40},
                     gate={"mode": "continuous"}, max_frames=160,
                     mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1})
        agent = Agent(cfg)
        thread = run_in_thread(agent)
        assert sub.wait(lambda: len(sub.on("result")) >= 30)
        broker.stop()
        time.sleep(1.5)  # the agent keeps classifying into the outbox
        broker.start()
        thread.join(60)
        assert not thread.is_alive()
        assert sub.wait(lambda: len({r["id"] for r in sub.json("result")}) >= agent.seq, timeout=30)
        seqs = [r["seq"] for r in sub.json("result")]
        first_seen = list(dict.fromkeys(seqs))
        assert agent.seq == 160 and sorted(first_seen) == list(range(1, 161))
        assert first_seen == sorted(first_seen)  # in order
        assert agent.parts.outbox.rows == 0 and agent.parts.publisher.connects >= 2
        print(f"sent {agent.seq}, delivered {len(first_seen)}, duplicates {len(seqs) - len(first_seen)}")
        sub.close()
    finally:
        broker.stop()


def test_backlog_replayed_after_restart(tmp_path, bundle, folder, broker):
    """First run with the broker down (everything stays in the outbox), second run replays it first."""
    broker.stop()
    cfg = config(tmp_path, bundle, folder, broker.url, gate={"mode": "continuous"}, drain_timeout_s=0.3)
    first = Agent(cfg)
    assert first.run() == 0 and first.parts.outbox.rows == 6 + 1  # six results and the closing sample
    broker.start()
    sub = Subscriber(broker.port)
    second = Agent(cfg)
    assert second.run() == 0
    assert sub.wait(lambda: len(sub.on("result")) >= 12)
    ids = [r["id"] for r in sub.json("result")]
    assert ids[:6] == [f"box1-1-{i}" for i in range(1, 7)] and ids[6:] == [f"box1-2-{i}" for i in range(1, 7)]
    assert second.parts.outbox.rows == 0
    sub.close()


def test_bad_frames_counted_offline(tmp_path, bundle, folder):
    cv2.imwrite(str(folder / "g_gray.png"), np.full((80, 80), 120, np.uint8))
    cv2.imwrite(str(folder / "g_16bit.png"), np.full((80, 80, 3), 30000, np.uint16))
    (folder / "g_corrupt.jpg").write_bytes((folder / "f00.jpg").read_bytes()[:200])
    (folder / "g_empty.jpg").write_bytes(b"")
    agent = Agent(config(tmp_path, bundle, folder, gate={"mode": "continuous"}))
    assert agent.run() == 0
    assert dict(agent.parts.stats.bad) == {"grayscale": 1, "bit_depth": 1, "corrupt": 1, "empty": 1}
    assert agent.parts.stats.fields == 6 and agent.parts.stats.frames == 10
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["type"] == "result" for x in lines) == 6


def test_offline_stats_payload_keys_and_total(tmp_path, bundle, folder):
    """The stats message every component reports into keeps its keys; offline, `mqtt` is all zeros;
    the stats' `total` window holds the very numbers the results carried as `latency_ms.total`."""
    agent = Agent(config(tmp_path, bundle, folder, gate={"mode": "continuous"}))
    agent.start()
    while (frame := agent.parts.source.read()) is not END:
        agent.process(frame)
    stats = agent.stats_payload()
    agent.shutdown()
    StatsMessage.model_validate(stats)
    assert list(stats) == ["schema", "ts", "device", "uptime_s", "fps", "fields", "latency_ms", "outbox",
                           "result_log", "frames", "gate_rejected", "backend", "source", "mqtt", "samples_closed",
                           "unfamiliar", "cpu_temp_c"]
    assert list(stats["outbox"]) == ["backlog", "bytes", "dropped", "written", "in_memory", "memory_dropped",
                                     "disk_error", "disk_failures", "inflight"]
    assert (stats["outbox"]["in_memory"], stats["outbox"]["disk_error"]) == (0, None)
    assert stats["outbox"]["backlog"] == stats["outbox"]["written"] == 6 and stats["outbox"]["inflight"] == 0
    assert stats["frames"] == {"total": 6, "bad": 0}
    assert stats["source"] == {"uri": str(folder), "state": "open", "reopens": 0, "eofs": 1, "failures": 0,
                               "last_error": None}
    assert stats["mqtt"] == {"connected": False, "connects": 0, "acked": 0, "rejected": 0, "commands": 0,
                             "commands_bad": 0, "commands_retained_ignored": 0, "handler_errors": 0,
                             "network_restarts": 0, "last_error": None}
    assert set(stats["latency_ms"]) == {"decode", "gate", "pre", "invoke", "guard", "outbox", "publish", "total",
                                        "overhead"}
    assert stats["unfamiliar"]["fields"] <= stats["fields"] and 0.0 <= stats["unfamiliar"]["rate"] <= 1.0
    results = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    totals = [r["latency_ms"]["total"] for r in results if r["type"] == "result"]
    assert totals == [round(v, 3) for v in agent.parts.stats.stages["total"]]


def test_preprocessing_parity_with_trainer_and_converter(tmp_path, bundle):
    """The tensor the agent feeds the model == trainer.data.load_images (used by the converter's validation)."""
    from edge.pixels import preprocess, read_image
    from edge.sources import make_source
    from trainer.data import Item, load_images
    from trainer.synth.fields import render_field

    rng = np.random.default_rng(3)
    folder = tmp_path / "Original" / "Benign"
    folder.mkdir(parents=True)
    for i, (h, w) in enumerate([(90, 120), (150, 100), (64, 64), (301, 257)]):  # non-square, odd sizes
        field = cv2.resize(render_field(rng, "Benign", max(h, w)), (w, h))
        cv2.imwrite(str(folder / f"WBC-Benign-{i:03d}.jpg"), field[..., ::-1])
    agent = Agent(config(tmp_path, bundle, folder, gate={"mode": "continuous"}))
    agent.start()
    seen, infer = [], agent.parts.backend.infer_with_features
    agent.parts.backend.infer_with_features = lambda x: seen.append(x.copy()) or infer(x)
    src = make_source(str(folder)).open()
    while (frame := src.read()) is not None:
        agent.process(frame)
    agent.shutdown()
    paths = sorted(folder.glob("*.jpg"))
    x, y, bad = load_images([Item(p, "Benign") for p in paths], 64, progress=False)
    assert not bad and len(seen) == 4
    np.testing.assert_array_equal(np.stack(seen), x)
    np.testing.assert_array_equal(x[3], preprocess(read_image(paths[3]), agent.parts.manifest.input))


def test_frame_sha256_is_the_files_own_and_large_jpegs_decode_reduced(tmp_path, bundle):
    """Folder frames: frame.sha256 == sha256sum of the file; a 1280x960 JPEG decodes at 320x240 (the
    bundle's 64 px input and the gate's 160 px analysis copy need a short side of 160), a PNG decodes
    in full and is then reduced alike. Frames handed over as arrays (a camera) are hashed over their
    RGB pixels as received, and reduced like the files."""
    import hashlib

    from trainer.synth.fields import render_field

    rng = np.random.default_rng(5)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, ext in enumerate([".jpg", ".jpg", ".png"]):
        field = cv2.resize(render_field(rng, "Pre", 480), (1280, 960))
        cv2.imwrite(str(folder / f"f{i}{ext}"), field[..., ::-1])
    cv2.setNumThreads(2)
    agent = Agent(config(tmp_path, bundle, folder, gate={"mode": "continuous"}))
    agent.run()
    assert cv2.getNumThreads() == 1  # the agent's OpenCV stays off the model's cores
    results = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    frames = [r["frame"] for r in results if r["type"] == "result"]
    files = sorted(folder.iterdir())
    assert [f["sha256"] for f in frames] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert [(f["w"], f["h"]) for f in frames] == [(320, 240)] * 3
    agent.start()
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    probs = np.full(4, 0.25, np.float32)
    assert agent.build_result(rgb, 1.0, probs)["frame"]["sha256"] == hashlib.sha256(rgb.tobytes()).hexdigest()
    from edge.sources.base import Frame

    camera = [cv2.resize(render_field(rng, label, 480), (1280, 960)) for label in ("Early", "Pro")]
    got = [agent.process(Frame(image, i, f"cam#{i}", 0.0, True)) for i, image in enumerate(camera)]
    # hashed in the agent's hash thread, beside the model
    assert [r["frame"]["sha256"] for r in got] == [hashlib.sha256(c.tobytes()).hexdigest() for c in camera]
    assert [(r["frame"]["w"], r["frame"]["h"]) for r in got] == [(320, 240)] * 2
    agent.shutdown()


def _agent_proc(tmp_path, bundle, folder, url) -> subprocess.Popen:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"device_id: box9\nbundle: {bundle}\nsource: {{uri: '{folder}', loop: true, fps: 20}}\n"
                   f"gate: {{mode: continuous}}\nmqtt: {{url: '{url}', keepalive_s: 5}}\n"
                   f"outbox: {{path: '{tmp_path / 'ob.sqlite'}'}}\nresult_log: {{path: null}}\nui: {{listen: 'off'}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "leukedge.cli", "agent", "--config", str(cfg)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_last_will_when_killed(tmp_path, bundle, folder, broker):
    sub = Subscriber(broker.port)
    proc = _agent_proc(tmp_path, bundle, folder, broker.url)
    try:
        assert sub.wait(lambda: len(sub.on("result")) >= 2, timeout=60), proc.stdout.read1().decode()
        assert sub.on("status")[-1] == (False, b"online")
        proc.kill()  # SIGKILL: no chance to say goodbye; the broker sends the Will
        proc.wait(10)
        assert sub.wait(lambda: sub.on("status")[-1][1] == b"offline")
    finally:
        proc.kill()
        proc.wait(10)
    late = Subscriber(broker.port, "late")
    assert late.wait(lambda: late.on("status")) and late.on("status")[0] == (True, b"offline")  # retained Will
    late.close()
    sub.close()


def test_sigterm_flushes_and_exits_0(tmp_path, bundle, folder, broker):
    sub = Subscriber(broker.port)
    proc = _agent_proc(tmp_path, bundle, folder, broker.url)
    try:
        assert sub.wait(lambda: len(sub.on("result")) >= 2, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    out = proc.stdout.read().decode()
    assert "Traceback" not in out and "agent stopped" in out
    assert sub.wait(lambda: sub.on("status")[-1] == (False, b"offline") or sub.on("status")[-1][1] == b"offline")
    assert sub.wait(lambda: sub.json("sample") and sub.json("sample")[-1]["closed_by"] == "shutdown")
    last_seq = max(r["seq"] for r in sub.json("result"))
    assert sorted({r["seq"] for r in sub.json("result")}) == list(range(1, last_seq + 1))
    sub.close()


def test_check_command(tmp_path, bundle, folder, broker, capsys):
    from leukedge.cli import main

    args = ["agent", "--bundle", str(bundle), "--source", str(folder), "--device-id", "chk", "--ui", "127.0.0.1:0"]
    assert main([*args, "--mqtt", broker.url, "--check"]) == 0
    out = capsys.readouterr().out
    assert "backend   ok: litert-cpu" in out and "broker    ok" in out and "would run: yes" in out
    assert "page      ok: http://127.0.0.1:0/, no password (loopback)" in out
    assert re.search(r"frame     \d+x\d+: its centre (\d+)x\1 square is shrunk [\d.]+x to the model's", out), out
    assert re.search(r"a field refers below \d+ % confidence, a slide below \d+ %", out), out
    broker.stop()
    assert main([*args, "--mqtt", broker.url, "--check"]) == 1
    assert "broker    FAILED" in capsys.readouterr().out
    assert main(["agent", "--bundle", str(tmp_path / "nope"), "--check"]) == 2
    assert "no manifest" in capsys.readouterr().err
