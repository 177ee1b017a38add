"""The agent's parts on their own: config, commands, samples, outbox, result log, gate, sources.

picamera2 cannot work here (no libcamera): `test_picam_source_with_fake_picamera2`
injects a FAKE `picamera2` module into sys.modules at that boundary.
"""

from __future__ import annotations

import json
import sys
import types

import cv2
import numpy as np
import pytest

from edge.config import GateConfig, load_config
from edge.errors import BadFrame, BadInput
from edge.gate import Gate
from edge.outbox import Outbox
from edge.resultlog import ResultLog
from edge.sources import END, Watchdog, make_source
from edge.sources.base import SourceError

# --------------------------------------------------------------------------- config


def test_config_yaml_env_and_secret_file(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg_file = tmp_path / "agent.yaml"
    cfg_file.write_text(
        "device_id: ${BOX:-box-7}\nbundle: /b\nmqtt:\n  url: mqtt://${HOST}:1884\n"
        f"  username: u\n  password_file: {secret}\n"
    )
    monkeypatch.setenv("HOST", "broker.lan")
    cfg = load_config(cfg_file)
    assert cfg.device_id == "box-7" and cfg.mqtt.url == "mqtt://broker.lan:1884"
    assert cfg.mqtt.secret() == "s3cret" and "s3cret" not in repr(cfg)
    assert load_config(cfg_file, {"device_id": "cli-id"}).device_id == "cli-id"


def test_config_toml(tmp_path):
    f = tmp_path / "agent.toml"
    f.write_text('bundle = "/b"\n[gate]\nmode = "continuous"\nevery_n = 5\n')
    cfg = load_config(f)
    assert cfg.gate.mode == "continuous" and cfg.gate.every_n == 5


@pytest.mark.parametrize(
    "text, where",
    [
        ("bundle: /b\nmqtt:\n  prot: 5\n", "field mqtt.prot: unknown key"),
        ("bundle: /b\ngate:\n  still_frames: 0\n", "field gate.still_frames"),
        ("bundle: /b\nmqtt:\n  url: http://x\n", "field mqtt.url"),
        ("bundle: /b\nbackend:\n  name: coreml\n", "field backend.name: unknown backend"),
        ("bundle: /b\ndevice_id: 'a b'\n", "field device_id"),
        ("mqtt: {}\n", "field bundle: Field required"),
        ("bundle: /b\nmqtt:\n  url: mqtt://${NOPE_NOT_SET}\n", "field mqtt.url: environment variable NOPE_NOT_SET"),
        ("bundle: [1\n", "not valid YAML"),
        ("- 1\n", "top level must be a mapping"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, where):
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(BadInput) as exc:
        load_config(f)
    assert where in str(exc.value) and "\n" not in str(exc.value)


def test_cli_bad_config_exits_2(tmp_path, capsys):
    from leukedge.cli import main

    f = tmp_path / "agent.yaml"
    f.write_text("bundle: /b\nsource:\n  looop: true\n")
    assert main(["agent", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "field source.looop: unknown key" in err and "Traceback" not in err


# --------------------------------------------------------------------------- outbox


def test_outbox_order_persistence_and_bounds(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, max_rows=10)
    assert ob.next_boot() == 1
    ids = [ob.put("t", f"m{i}".encode()) for i in range(5)]
    assert [r.payload for r in ob.pending()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert ob.delete(ids[:2]) == 2 and ob.delete(ids[:2]) == 0
    ob.close()
    ob = Outbox(path, max_rows=10)  # restart: backlog and boot counter survive
    assert ob.next_boot() == 2 and ob.rows == 3
    assert [r.payload for r in ob.pending(after=ids[2])] == [b"m3", b"m4"]
    for i in range(5, 20):
        ob.put("t", f"m{i}".encode())
    assert ob.rows == 10 and ob.dropped == 8
    assert ob.pending(limit=1)[0].payload == b"m10"  # oldest went first
    ob.close()
    small = Outbox(tmp_path / "b.sqlite", max_rows=1000, max_bytes=10_000)
    for i in range(30):
        small.put("t", bytes(1000))
    assert small.bytes <= 10_000 and small.dropped == 20
    mode = small.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_result_log_rotates(tmp_path):
    log = ResultLog(tmp_path / "r.jsonl", max_bytes=10_000, backups=2)
    for i in range(300):
        log.write("result", {"seq": i, "pad": "x" * 50})
    log.close()
    files = sorted(tmp_path.glob("r.jsonl*"))
    assert [f.name for f in files] == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    last = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[-1])
    assert last == {"type": "result", "seq": 299, "pad": "x" * 50}


# --------------------------------------------------------------------------- gate


@pytest.mark.parametrize("seed", [0, 4])
def test_gate_classifies_each_still_sharp_field_once(tmp_path, seed):
    from trainer.synth.video import write_video

    meta = write_video(tmp_path / "v.mp4", n_fields=6, size=320, seed=seed, fps=15)
    src = make_source(str(tmp_path / "v.mp4")).open()
    gate, accepted = Gate(GateConfig()), []
    while (frame := src.read()) is not None:
        if gate.check(frame.image).accept:
            accepted.append(frame.index)
    for field in meta["fields"]:
        start, stop = field["still"]
        assert sum(start <= i < stop for i in accepted) == 1, (field, accepted)
    assert len(accepted) == len(meta["fields"])
    assert gate.rejected["moving"] > 0 and gate.rejected["same_field"] > 0 and gate.rejected["blurred"] > 0


def test_gate_continuous_and_blank():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(7)]
    gate = Gate(GateConfig(mode="continuous", every_n=3))
    assert [gate.check(f).accept for f in frames] == [True, False, False, True, False, False, True]
    still = Gate(GateConfig(still_frames=1))
    blank = np.full((120, 160, 3), 200, np.uint8)
    assert [still.check(blank).reason for _ in range(3)] == ["moving", "blank", "blank"]


# --------------------------------------------------------------------------- sources


def test_folder_source_decodes_as_small_as_the_running_bundle_allows(tmp_path):
    """A new bundle with a larger input raises the reduced-decoding floor (Agent.switch_bundle), and a
    reopened source keeps the new floor: no model is fed an upscaled quarter-size decode."""
    from edge.config import SourceConfig
    from edge.sources import open_watchdog

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), np.random.default_rng(i).integers(0, 256, (720, 1280, 3), np.uint8))
    wd = open_watchdog(SourceConfig(uri=str(tmp_path), loop=True, fps="max"), min_side=64)
    assert wd.read().image.shape == (90, 160, 3)  # 1/8: 90 >= 64
    wd.set_min_side(96)  # a 96 px model now runs
    assert wd.read().image.shape == (180, 320, 3)  # 1/4
    assert wd.read() is None  # end of the folder: reopened (loop), by the factory
    assert wd.read().image.shape == (180, 320, 3) and wd.reopens >= 1


def test_folder_source_counts_bad_files_and_loops(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((40, 50, 3), 100, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(tmp_path / "c.png"), np.full((40, 50), 100, np.uint8))  # grayscale
    wd = Watchdog(lambda: make_source(str(tmp_path)), loop=False).open()
    seen = []
    while True:
        try:
            frame = wd.read()
        except BadFrame as exc:
            seen.append("bad: " + ("corrupt" if "not a decodable" in str(exc) else "grayscale" if "grayscale" in str(exc) else str(exc)))
            continue
        if frame is END:
            break
        seen.append(frame.name)
    assert seen == ["a.jpg", "bad: corrupt", "bad: grayscale"]
    loop = Watchdog(lambda: make_source(str(tmp_path)), loop=True).open()
    names = []
    for _ in range(12):
        try:
            f = loop.read()
        except BadFrame:
            continue
        if f is not None:
            names.append(f.name)
    assert names.count("a.jpg") >= 2 and loop.reopens >= 1 and loop.eofs >= 1


def test_missing_finite_source_is_bad_input_and_loop_retries(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        Watchdog(lambda: make_source(str(tmp_path / "gone.mp4"))).open()
    wd = Watchdog(lambda: make_source(str(tmp_path / "gone.mp4")), loop=True, backoff_initial_s=0.01).open()
    for _ in range(20):
        assert wd.read() is None
    assert wd.state == "reopening" and wd.failures >= 2 and "not found" in wd.last_error
    assert wd.backoff > 0.01  # backing off


def test_video_file_source_reads_rgb(tmp_path):
    path = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(5):
        w.write(np.dstack([np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8), np.full((48, 64), 255, np.uint8)]))
    w.release()
    src = make_source(str(path)).open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert len(frames) == 5 and frames[0].image.shape == (48, 64, 3)
    assert frames[0].image[..., 0].mean() > 200  # BGR red written -> R channel in RGB


def test_picam_source_with_fake_picamera2(monkeypatch):
    """FAKE picamera2: libcamera cannot exist here, so a stand-in Picamera2 class is injected."""
    calls = {}

    class FakePicamera2:
        def __init__(self, num=0):
            calls["num"] = num

        def create_video_configuration(self, main):
            return {"main": main}

        def configure(self, config):
            calls["config"] = config

        def start(self):
            calls["started"] = True

        def capture_array(self, name="main"):
            w, h = calls["config"]["main"]["size"]
            return np.full((h, w, 3), (10, 20, 30), np.uint8)

        def stop(self):
            calls["stopped"] = True

        def close(self):
            calls["closed"] = True

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    src = make_source("picam:1", width=640, height=480)
    assert src.live
    src.open()
    frame = src.read()
    src.close()
    assert calls["num"] == 1 and calls["config"]["main"] == {"size": (640, 480), "format": "BGR888"}
    assert frame.image.shape == (480, 640, 3) and calls["stopped"] and calls["closed"]
    monkeypatch.setitem(sys.modules, "picamera2", None)  # not installed
    with pytest.raises(SourceError, match="picamera2 is not installed"):
        make_source("picam:").open()


def test_example_config_is_valid_and_documents_every_key(monkeypatch):
    """deploy/agent.example.yaml loads, and lists every key of the config model."""
    from pathlib import Path

    import yaml
    from pydantic import BaseModel

    from edge.config import AgentConfig

    path = Path(__file__).resolve().parents[1] / "deploy" / "agent.example.yaml"
    monkeypatch.delenv("LEUKEDGE_DEVICE_ID", raising=False)
    cfg = load_config(path)
    assert cfg.device_id == "scope-01" and cfg.source.uri == "picam:"

    def missing(model: type[BaseModel], data: dict, where: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            if name not in data:
                out.append(f"{where}{name}")
            elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                out += missing(field.annotation, data[name] or {}, f"{where}{name}.")
        return out

    assert missing(AgentConfig, yaml.safe_load(path.read_text()), "") == []


def test_watchdog_reopens_a_lost_live_source_with_backoff():
    """A live source that loses its device twice: reopened each time, backoff reset after a frame."""
    from edge.sources.base import Frame, Source, SourceLost

    opened = []

    class Flaky(Source):
        live = True

        def open(self):
            opened.append(1)
            self.n = 0
            return self

        def read(self):
            self.n += 1
            if self.n == 3 and len(opened) < 3:
                raise SourceLost("unplugged")
            return Frame(np.zeros((16, 16, 3), np.uint8), self.n, "flaky", 0.0)

    wd = Watchdog(Flaky, backoff_initial_s=0.01, backoff_max_s=0.05).open()
    frames = [f for f in (wd.read() for _ in range(60)) if f is not None]
    assert wd.reopens == 2 and wd.failures == 2 and len(opened) == 3 and len(frames) > 10
    assert wd.backoff == 0.01 and wd.state == "open"


def test_edge_imports_are_light():
    """The agent's modules never pull in TensorFlow (the box does not have it)."""
    import subprocess

    code = ("import sys, edge.agent, edge.agent_cli, edge.publisher, edge.sources, edge.backends, edge.gate, "
            "edge.outbox, edge.samples, edge.messages, edge.config, edge.sources.opencv, edge.backends.litert, "
            "edge.backends.onnx, edge.backends.edgetpu; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'cv2', 'paho')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_flags_override_only_what_is_given(tmp_path):
    import argparse

    from edge.agent_cli import add_arguments, overrides

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    f = tmp_path / "agent.yaml"
    f.write_text("bundle: /b\nsource: {uri: cv:1, loop: true}\nmqtt: {url: 'mqtt://a:1883', prefix: lab}\n")
    cfg = load_config(f, overrides(parser.parse_args(["--mqtt", "off", "--device-id", "x9"])))
    assert (cfg.mqtt.url, cfg.mqtt.prefix, cfg.device_id) == (None, "lab", "x9")
    assert (cfg.source.uri, cfg.source.loop) == ("cv:1", True)
    assert load_config(f, {"result_log": {"path": None}}).result_log.path is None  # explicit None = off


def test_a_vanished_folder_source_is_reported_as_a_folder(tmp_path):
    from edge.sources import SourceError, make_source

    src = make_source(str(tmp_path / "frames"))
    with pytest.raises(SourceError, match="folder not found"):
        src.open()
    with pytest.raises(SourceError, match="video"):
        make_source(str(tmp_path / "missing.mp4")).open()
