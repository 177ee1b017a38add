"""Bad input never crashes the agent or loses queued data: every case has a defined result.

Frames: skipped and counted with a reason (corrupt, truncated, empty, grayscale, 16-bit,
too small, over source.max_pixels) or used (RGBA loses alpha; a 7000x7000 frame, 49 MP, is
cropped and resized). Bundles
and configs: refusal to start, exit code 2, one line naming the file or field. Commands:
rejected and counted, the agent keeps running. Plus hypothesis fuzzing of the config
loader and the command-payload parser.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.commands import COMMANDS, SAMPLE_ID, BadCommand, Command, parse
from edge.config import AgentConfig, load_config, substitute_env, validate
from edge.errors import BadInput
from leukedge.agent_process import AgentProcess, ResultFeed, agent_config, write_images
from tests.agent_proc import blank_png, logged_ids
from tests.broker import mosquitto_available
from tests.hostile import assert_refused, bundle, leukedge  # noqa: F401  (bundle: a fixture)


# --------------------------------------------------------------------------- frames


def write_bad_frames(folder: Path) -> dict[str, str | None]:
    """Files and the reason each must be skipped for (None: it must be classified)."""
    import cv2

    folder.mkdir(parents=True)
    write_images(folder, n=3, size=96, seed=1)  # field-0000..0002.jpg, good
    rng = np.random.default_rng(2)
    good = cv2.imencode(".jpg", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))[1].tobytes()
    (folder / "corrupt.jpg").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "gray.jpg"), rng.integers(0, 256, (96, 96), dtype=np.uint8))
    cv2.imwrite(str(folder / "deep16.png"), rng.integers(0, 65535, (96, 96, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "tiny.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 256, (96, 96, 4), dtype=np.uint8))
    ramp = np.linspace(0, 255, 7000, dtype=np.uint8)  # smooth, so the 7k JPEG stays small on disk
    cv2.imwrite(str(folder / "huge7k.jpg"), np.dstack([np.broadcast_to(ramp, (7000, 7000))] * 3))
    (folder / "over_cap.png").write_bytes(blank_png(8192, 8192))  # 67 MP: over the 50 MP default
    return {"corrupt.jpg": "corrupt", "truncated.jpg": "corrupt", "empty.jpg": "empty", "gray.jpg": "grayscale",
            "deep16.png": "bit_depth", "tiny.png": "too_small", "rgba.png": None, "huge7k.jpg": None,
            "over_cap.png": "too_large",
            **{f"field-{i:04d}.jpg": None for i in range(3)}}


def test_bad_frames_are_skipped_and_counted(tmp_path, bundle):
    expected = write_bad_frames(tmp_path / "frames")
    work = tmp_path / "agent"
    cfg = agent_config(work, bundle, tmp_path / "frames", source={"loop": False})
    agent = AgentProcess(work, cfg).start()
    assert agent.wait(120) == 0
    log = agent.log()
    assert "Traceback" not in log, log
    skipped = {name: why for why, name in re.findall(r"bad frame skipped \((\w+)\): .*/([\w.]+): ", log)}
    assert skipped == {name: why for name, why in expected.items() if why}, log
    results = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    sizes = sorted((r["frame"]["w"], r["frame"]["h"]) for r in results if r["type"] == "result")
    # 3 good, RGBA without alpha, and a 7k JPEG: decoded at 1/8 (875), then box-averaged by 4 (the 96 px
    # model and the gate's 160 px analysis copy need a short side of 160)
    assert sizes == [(96, 96)] * 4 + [(218, 218)]
    final = re.findall(r"stats: .* (\d+) fields, .* bad frames (\d+)", log)[-1]
    assert tuple(map(int, final)) == (5, 7)
    print(f"\n[bad frames] skipped {skipped}; classified {len(sizes)}")


# --------------------------------------------------------------------------- bundles


def edit_manifest(bundle_dir: Path, **changes) -> None:
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_bundle_file_changed_after_hashing(tmp_path, bundle):
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    model = b / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    for extra in ((), ("--check",)):
        assert_refused(leukedge("agent", "--bundle", b, "--source", tmp_path, "--mqtt", "off", *extra),
                       "model_int8.tflite", "sha256 mismatch")


def test_missing_model_file(tmp_path, bundle):
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    (b / "model_int8.tflite").unlink()
    assert_refused(leukedge("agent", "--bundle", b, "--source", tmp_path, "--mqtt", "off"), "model_int8.tflite",
                   "missing")


@pytest.mark.parametrize("change, needle", [
    ({"labels": ["Benign", "Early", "Pre"]}, "label"),
    ({"labels": ["Benign", "Early", "Pre", "Pre"]}, "labels"),
    ({"input": {"height": 96, "width": 96}}, "96"),
    ({"schema_version": 99}, "schema_version"),
    ({"arch": "resnet"}, "arch"),
])
def test_manifest_that_disagrees_with_the_model(tmp_path, bundle, change, needle):
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    edit_manifest(b, **change)
    assert_refused(leukedge("agent", "--bundle", b, "--source", tmp_path, "--mqtt", "off"), needle)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("text, needle", [
    ("bundle: B\nsource: {uri: S, fps: -5}\n", "source.fps"),
    ("bundle: B\nmqtt: {url: 'http://x'}\n", "mqtt.url"),
    ("bundle: B\nmqtt: {url: 'mqtt://host:99999'}\n", "mqtt.url"),
    ("bundle: B\ndevice_id: 'a/b+#'\n", "device_id"),
    ("bundle: B\noutbox: {max_rows: 'many'}\n", "outbox.max_rows"),
    ("bundle: B\ngate: {mode: sometimes}\n", "gate.mode"),
    ("bundle: B\nbackend: {name: quantum}\n", "backend.name"),
    ("bundle: B\nsauce: {uri: S}\n", "sauce"),
    ("bundle: B\nmqtt: {prefix: 'a/#'}\n", "mqtt.prefix"),
    ("bundle: B\nmqtt: {password: '${LEUKEDGE_TEST_UNSET_VAR}'}\n", "mqtt.password"),
    ("- just\n- a list\n", "top level"),
    ("bundle: [unclosed\n", "not valid YAML"),
    ("bundle = 'x'\n[[[\n", "not valid TOML"),
])
def test_malformed_config_is_refused_with_the_field_named(tmp_path, text, needle):
    path = tmp_path / ("agent.toml" if "TOML" in needle else "agent.yaml")
    path.write_text(text)
    line = assert_refused(leukedge("agent", "--config", path), needle)
    assert str(path) in line or "environment variable" in line  # a missing ${VAR} names its field only


def test_unreadable_password_file_is_refused(tmp_path, bundle):
    path = tmp_path / "agent.yaml"
    frames = write_images(tmp_path / "frames", n=2)
    path.write_text(f"bundle: {bundle}\nsource: {{uri: {frames}}}\n"
                    f"mqtt: {{url: 'mqtt://127.0.0.1:1', username: u, password_file: {tmp_path}/nope}}\n")
    assert_refused(leukedge("agent", "--config", path), "mqtt.password_file")


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize("name, payload, outcome", [
    ("sample/start", b"", Command("sample/start", None)),
    ("sample/start", b'{"sample_id": "S-1"}', Command("sample/start", "S-1")),
    ("sample/id", b'{"sample_id": "lab:42.a"}', Command("sample/id", "lab:42.a")),
    ("sample/end", b"{}", Command("sample/end", None)),
    ("sample/start", b"not json", "not JSON"),
    ("sample/start", b"[1, 2]", "JSON object"),
    ("sample/start", b'{"sample_id": 42}', "sample_id"),
    ("sample/start", b'{"sample_id": "has#hash"}', "sample_id"),
    ("sample/start", b'{"sample_id": " H 2024/00417 \\n"}', Command("sample/start", "H 2024/00417")),  # trimmed
    ("sample/start", b'{"sample_id": "Jane Doe, DOB 1970"}', "sample_id"),
    ("sample/start", b'{"sample_id": "S", "cmd": "rm -rf /"}', "cmd"),
    ("sample/id", b"{}", "required"),
    ("sample/end", b'{"sample_id": "S"}', "no sample_id"),
    ("reboot", b"{}", "unknown command"),
    ("sample/start/../x", b"{}", "unknown command"),
    ("sample/start", b"{" + b" " * 2000 + b"}", "over"),
    ("sample/start", b"\xff\xfe\x00", "not JSON"),
    ("sample/start", b"\xff\xfe", "not JSON"),
    ("sample/start", b"{", "not JSON"),
    ("sample/start", b"[1]", "JSON object"),
    ("sample/start", b'{"sample_id": "<b>x</b>"}', "sample_id"),
    ("sample/start", b'{"sample_id": "x", "rm": 1}', "rm"),
    ("sample/start", b"x" * 5000, "over"),
    ("sample/id", b'{"sample_id": "lab:42"}', Command("sample/id", "lab:42")),
    ("reboot", b"", "unknown command"),
])
def test_command_payloads(name, payload, outcome):
    if isinstance(outcome, Command):
        assert parse(name, payload) == outcome
    else:
        with pytest.raises(BadCommand, match=re.escape(outcome)):
            parse(name, payload)


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed (CI installs it)")
def test_malformed_commands_do_not_disturb_a_running_agent(tmp_path, bundle, broker):
    import paho.mqtt.client as mqtt

    replay = write_images(tmp_path / "fields", n=20)
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/stats",))
    work = tmp_path / "agent"
    agent = AgentProcess(work, agent_config(work, bundle, replay, broker.url, source={"fps": 30.0},
                                            sample={"fields_per_sample": 0}, mqtt={"stats_interval_s": 0.5}))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        # A retained command waiting on the broker reaches the agent flagged retained when it
        # subscribes: a stale "start" that must not open a sample.
        c.publish("leukedge/devA/cmd/sample/start", b'{"sample_id": "RETAINED"}', qos=1, retain=True).wait_for_publish(5)
        agent.start()
        assert feed.wait_for({"devA-1-5"}, 60) == set(), agent.log()[-2000:]
        bad = [("sample/start", b"not json"), ("sample/start", b'{"sample_id": "a<b"}'), ("reboot", b"{}"),
               ("sample/start", b"x" * 5000), ("sample/id", b"{}"), ("sample/start", b'{"exec": "sh"}')]
        for name, payload in bad:
            c.publish(f"leukedge/devA/cmd/{name}", payload, qos=1).wait_for_publish(5)
        c.publish("leukedge/devA/cmd/sample/start", b'{"sample_id": "S-42"}', qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with feed.lock:
                tagged = [r for r, _ in feed.results if r["sample_id"] == "S-42"]
            if len(tagged) >= 3:
                break
            time.sleep(0.1)
        assert len(tagged) >= 3 and agent.alive()
        s = feed.wait_stats(lambda s: s["mqtt"]["commands"] >= 1, 10)
        assert s is not None
        mq = s["mqtt"]
        print(f"\n[commands] ok {mq['commands']}, bad {mq['commands_bad']}, retained ignored "
              f"{mq['commands_retained_ignored']}")
        assert (mq["commands_bad"], mq["commands_retained_ignored"]) == (len(bad), 1) and mq["commands"] >= 1
        with feed.lock:
            assert not any(r["sample_id"] == "RETAINED" for r, _ in feed.results)
        assert agent.terminate() == 0
        assert "Traceback" not in agent.log()
        assert set(logged_ids(work / "results.jsonl")) <= set(feed.ids())
    finally:
        c.publish("leukedge/devA/cmd/sample/start", b"", qos=1, retain=True)  # clear the retained one
        c.disconnect()
        c.loop_stop()
        feed.close()
        if agent.alive():
            agent.kill9()


# --------------------------------------------------------------------------- fuzzing

_SECTIONS = ["device_id", "bundle", "backend", "source", "gate", "sample", "mqtt", "outbox", "result_log",
             "drain_timeout_s", "max_frames"]
_KEYS = ["uri", "loop", "fps", "name", "mode", "url", "prefix", "password", "password_file", "path", "max_rows",
         "tls", "ca_file", "insecure", "watchdog", "stall_s", "every_n", "threads", "device", "x"]
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                     st.text(max_size=30), st.sampled_from(["mqtt://h:1883", "mqtts://h", "${HOME}", "${NOPE}",
                                                            "${NOPE:-d}", "picam:", "cv:0", "auto", "still"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)), max_leaves=12)
# Keys without control characters: a key holding a newline would make the one-line error two lines.
_keys = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)
_configs = st.dictionaries(st.sampled_from(_SECTIONS) | _keys, _values, max_size=8)
_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(_configs)
def test_fuzz_config_validation(data):
    """Any parsed structure: a valid config or BadInput with one line naming a field, nothing else."""
    try:
        cfg = validate(substitute_env(data, env={"HOME": "/home/x"}))
    except BadInput as exc:
        assert "\n" not in str(exc) and str(exc).startswith("config")
    else:
        assert isinstance(cfg, AgentConfig)


@_fuzz
@given(st.text(max_size=300), st.sampled_from([".yaml", ".toml"]))
def test_fuzz_config_file(tmp_path_factory, text, suffix):
    """Any file content: a config or one BadInput line naming the file."""
    path = tmp_path_factory.mktemp("cfg") / f"agent{suffix}"
    path.write_text(text)
    try:
        load_config(path, env={})
    except BadInput as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@_fuzz
@given(st.sampled_from(COMMANDS) | st.text(max_size=20),
       st.binary(max_size=300) | st.builds(lambda o: json.dumps(o).encode(), _values))
def test_fuzz_command_parser(name, payload):
    """Any topic suffix and payload: a valid Command or BadCommand, never anything else."""
    try:
        cmd = parse(name, payload)
    except BadCommand:
        return
    assert cmd.name in COMMANDS
    assert cmd.sample_id is None or re.fullmatch(SAMPLE_ID, cmd.sample_id)


def test_screenshots_script_names_a_bad_bundle_or_video(tmp_path, capsys):
    """`python -m leukedge.screenshots` with a folder that is no bundle, or a video that is not
    there: exit 2 and one line naming it, before any browser or broker starts."""
    from leukedge.screenshots import main

    assert main(["--out", str(tmp_path / "shots"), "--bundle", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a bundle folder (manifest.json)" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "shots"), "--video", str(tmp_path / "none.mp4")]) == 2
    assert "none.mp4 is not a video file" in capsys.readouterr().err
    assert not (tmp_path / "shots").exists()
