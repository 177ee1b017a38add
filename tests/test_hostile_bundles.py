"""Hostile input, end to end: bundle paths, secrets, bad arguments and configs, outbox ownership."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from leukedge.agent_process import write_images
from tests.hostile import assert_refused, bundle, leukedge, queued  # noqa: F401  (bundle: a fixture)

# =========================================================================== bundles, storage, secrets, broker
# (issue 10 items 1, 2, 4, 5, 7, 8, 9, 10, 12)


def _manifest(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def _write_manifest(b: Path, manifest) -> None:
    (b / "manifest.json").write_text(json.dumps(manifest))


def _outside_model(tmp_path: Path, b: Path) -> Path:
    """The bundle's int8 model moved outside the bundle folder (same bytes, same sha256)."""
    outside = tmp_path / "elsewhere" / "model_int8.tflite"
    outside.parent.mkdir()
    shutil.move(b / "model_int8.tflite", outside)
    return outside


@pytest.mark.parametrize("case", ["absolute", "dotdot", "extra_secret", "symlink_out", "abs_right_hash", "fifo"])
def test_manifest_paths_never_reach_outside_the_bundle(tmp_path, bundle, case):
    """/etc/passwd, ../.., an extra /etc/shadow entry, a symlink to a model outside (right sha256),
    an absolute path to it (right sha256), a FIFO inside: refused by the agent, --check and bench,
    naming the manifest entry and printing no hash of a file outside."""
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    m = _manifest(b)
    int8 = next(e for e in m["files"] if e["format"] == "tflite-int8")
    if case == "absolute":
        int8["path"] = "/etc/passwd"
    elif case == "dotdot":
        int8["path"] = "../../../../../../etc/passwd"
    elif case == "extra_secret":
        m["files"].append({"path": "/etc/shadow", "format": "tflite-fp32", "sha256": "0" * 64})
    elif case == "symlink_out":
        (b / "model_int8.tflite").symlink_to(_outside_model(tmp_path, b))
    elif case == "abs_right_hash":
        int8["path"] = str(_outside_model(tmp_path, b))
    elif case == "fifo":
        (b / "model_int8.tflite").unlink()
        os.mkfifo(b / "model_int8.tflite")  # hashing it would block forever
    _write_manifest(b, m)
    outside_hashes = {_sha_prefix(p) for p in (Path("/etc/passwd"), tmp_path / "elsewhere" / "model_int8.tflite")
                      if p.is_file()}
    frames = write_images(tmp_path / "frames", n=2, size=64)
    for args in (("agent", "--bundle", b, "--source", frames, "--mqtt", "off", "--max-frames", "2",
                  "--outbox", tmp_path / "o.sqlite", "--result-log", tmp_path / "r.jsonl"),
                 ("agent", "--bundle", b, "--source", frames, "--mqtt", "off", "--check"),
                 ("bench", b, "--data", frames)):
        proc = leukedge(*args)
        line = assert_refused(proc, "manifest.json", "files entry")
        assert not any(h in proc.stdout + proc.stderr for h in outside_hashes), line
        if case == "symlink_out":
            assert "outside the bundle" in line
        elif case == "fifo":
            assert "not a regular file" in line


def _sha_prefix(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_bundle_path_rule_in_process(tmp_path, bundle):
    """The shared rule itself: a symlink inside the bundle to a file inside it is fine; a
    symlinked bundle folder is fine; a symlink loop and a folder are refused."""
    from edge.errors import BundleError
    from edge.manifest import FileEntry, bundle_path

    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    (b / "sub").mkdir()
    os.symlink("../model_int8.tflite", b / "sub" / "alias.tflite")
    entry = FileEntry(path="sub/alias.tflite", format="tflite-int8", sha256="0" * 64)
    assert bundle_path(b, entry) == (b / "model_int8.tflite").resolve()
    (tmp_path / "link").symlink_to(b)
    assert bundle_path(tmp_path / "link", entry) == (b / "model_int8.tflite").resolve()
    os.symlink("loop", b / "loop")
    for path, needle in (("loop", "cannot be resolved"), ("sub", "not a regular file"), ("", "relative"),
                         ("a\0b", "cannot be resolved")):
        with pytest.raises(BundleError, match=needle):
            bundle_path(b, FileEntry(path=path, format="tflite-int8", sha256="0" * 64))


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:camsecret@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
    ("rtsp://admin:p@ss:w@rd@cam/x", "rtsp://admin:***@cam/x"),
    ("mqtts://u:s3cret@broker:8883", "mqtts://u:***@broker:8883"),
    ("http://cam/video.cgi?user=a&password=hunter2&fps=5", "http://cam/video.cgi?user=a&password=***&fps=5"),
    ("https://cam/live?token=abc", "https://cam/live?token=***"),
    ("rtsp://onlyuser@cam/x", "rtsp://onlyuser@cam/x"),
    ("rtsp://a:b@[::1/x", "rtsp://***@[::1/x"),
    ("cv:0", "cv:0"),
    ("/data/fields", "/data/fields"),
])
def test_one_redaction_for_every_url(url, shown):
    from edge.redact import redact_url

    assert redact_url(url) == shown


def test_camera_credentials_never_shown_or_published(tmp_path, bundle, broker):
    """A camera URL with a password and a broker URL with one: neither secret in the retained
    `info`, `stats`, the start-up and watchdog log lines, or `--check`."""
    from leukedge.agent_process import AgentProcess, ResultFeed, agent_config
    from tests.broker import free_port

    cam = f"rtsp://admin:camsecret@127.0.0.1:{free_port()}/stream1"
    url = f"mqtt://lab:brokersecret@127.0.0.1:{broker.port}"
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/info", "leukedge/devA/stats"))
    agent = AgentProcess(tmp_path, agent_config(tmp_path, bundle, cam, url)).start()
    try:
        stats = feed.wait_stats(lambda s: s["source"]["failures"] >= 1, timeout=60)
        assert stats is not None, agent.log()
    finally:
        assert agent.terminate() == 0, agent.log()
        feed.close()
    published = b" ".join(p for _t, p in feed.other).decode()
    info = next(json.loads(p) for t, p in feed.other if t.endswith("/info"))
    assert info["source"] == cam.replace("camsecret", "***")
    log = agent.log()
    assert "retrying" in log and "admin:***@" in log  # the watchdog's line, redacted
    check = leukedge("agent", "--config", agent.config_path, "--check", timeout=120)
    assert "admin:***@" in check.stdout, check.stdout + check.stderr
    for text in (published, log, check.stdout + check.stderr):
        assert "camsecret" not in text and "brokersecret" not in text


def _seeded_outbox(path: Path, n: int = 3) -> list[tuple[str, bytes]]:
    """An outbox with n queued messages from an earlier run; returns them."""
    from edge.outbox import Outbox

    ob = Outbox(path)
    ob.next_boot()
    for i in range(n):
        ob.put("leukedge/devA/result", json.dumps({"id": f"devA-1-{i + 1}"}).encode())
    ob.close()
    return queued(path)


def _bad_input_case(tmp_path: Path, bundle: Path, case: str) -> tuple[list, tuple[str, ...]]:
    """(command line, needles its one error line must contain) for one hostile input."""
    frames = write_images(tmp_path / "frames", n=2, size=64)
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    agent = ["agent", "--bundle", b, "--source", frames, "--mqtt", "off", "--max-frames", "2",
             "--outbox", tmp_path / "o.sqlite", "--result-log", tmp_path / "r.jsonl"]
    if case == "cv_abc":
        return [*agent, "--source", "cv:abc"], ("source.uri", "cv:abc")
    if case == "etc_passwd":
        return [*agent, "--source", "/etc/passwd"], ("/etc/passwd", "not a folder, video or camera")
    if case == "outbox_empty":
        return [*agent, "--outbox", ""], ("outbox.path", "empty")
    if case == "outbox_dir":
        return [*agent, "--outbox", tmp_path], ("outbox.path", "folder")
    if case == "result_log_dir":
        return [*agent, "--result-log", tmp_path], ("result_log.path", "folder")
    if case == "max_frames_negative":
        return [*agent, "--max-frames", "-3"], ("--max-frames", "at least 1")
    if case == "ca_file_missing":
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(f"bundle: {b}\nsource: {{uri: {frames}}}\noutbox: {{path: {tmp_path / 'o.sqlite'}}}\n"
                       f"mqtt: {{url: 'mqtts://127.0.0.1:8883', tls: {{ca_file: {tmp_path / 'nope-ca.pem'}}}}}\n")
        return ["agent", "--config", cfg], ("mqtt.tls.ca_file", "nope-ca.pem", "not found")
    manifest = b / "manifest.json"
    if case == "manifest_not_utf8":
        manifest.write_bytes(manifest.read_bytes().replace(b'"bundle-', b'"\xff\xfe-'))
        return agent, ("manifest.json", "not UTF-8")
    if case == "manifest_deep":
        manifest.write_text("[" * 200_000 + "]" * 200_000)
        return agent, ("manifest.json", "nested too deeply")
    if case == "manifest_list":
        manifest.write_text("[]")
        return agent, ("manifest.json", "JSON object", "array")
    if case == "right_hash_not_a_model":
        import hashlib

        fake = b"this is a text file, not a TFLite model\n" * 10
        (b / "model_int8.tflite").write_bytes(fake)
        m = _manifest(b)
        next(e for e in m["files"] if e["format"] == "tflite-int8")["sha256"] = hashlib.sha256(fake).hexdigest()
        m["files"] = [e for e in m["files"] if e["format"] == "tflite-int8"]
        _write_manifest(b, m)
        return agent, ("model_int8.tflite", "not a tflite-int8 model")
    if case == "bench_json_missing_dir":
        return ["bench", b, "--data", frames, "--json", tmp_path / "no" / "such" / "v.json"], ("--json", "does not exist")
    if case == "bench_limit_negative":
        return ["bench", b, "--data", frames, "--limit", "-3"], ("--limit", "at least 1")
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "cv_abc", "etc_passwd", "outbox_empty", "outbox_dir", "result_log_dir", "max_frames_negative", "ca_file_missing",
    "manifest_not_utf8", "manifest_deep", "manifest_list", "right_hash_not_a_model", "bench_json_missing_dir",
    "bench_limit_negative"])
def test_bad_input_exits_2_with_one_line_and_keeps_the_queue(tmp_path, bundle, case):
    before = _seeded_outbox(tmp_path / "o.sqlite")
    args, needles = _bad_input_case(tmp_path, bundle, case)
    assert_refused(leukedge(*args), *needles)
    assert queued(tmp_path / "o.sqlite") == before  # nothing queued lost (or added)


def test_unquoted_yaml_off_runs_offline(tmp_path, bundle):
    """`url: off` unquoted is YAML false: it means offline, as the quoted string does."""
    frames = write_images(tmp_path / "frames", n=2, size=64)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"bundle: {bundle}\nsource: {{uri: {frames}}}\nmqtt: {{url: off}}\n")
    proc = leukedge("agent", "--config", cfg, "--check")
    assert proc.returncode == 0 and "broker    off" in proc.stdout, proc.stdout + proc.stderr
    cfg.write_text(f"bundle: {bundle}\nmqtt: {{url: yes}}\n")
    assert_refused(leukedge("agent", "--config", cfg), "mqtt.url", "quoted")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write to: a read-only bind mount where we are root (root ignores
    file modes), else mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    _seeded_outbox(d / "o.sqlite")
    (d / "r.jsonl").write_text('{"type": "result", "id": "old"}\n')
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", d, d]).returncode or \
                subprocess.run(["mount", "-o", "remount,bind,ro", d, d]).returncode:
            pytest.skip("cannot make a read-only bind mount here")
        yield d
        subprocess.run(["umount", d], check=True)
    else:
        d.chmod(0o555)
        for f in d.iterdir():
            f.chmod(0o444)
        yield d
        d.chmod(0o755)


@pytest.mark.parametrize("target", ["outbox", "result_log"])
def test_read_only_outbox_or_result_log_is_refused_untouched(tmp_path, bundle, read_only_dir, target):
    frames = write_images(tmp_path / "frames", n=2, size=64)
    files = {p.name: p.read_bytes() for p in read_only_dir.iterdir()}
    outbox = read_only_dir / "o.sqlite" if target == "outbox" else tmp_path / "o.sqlite"
    results = read_only_dir / "r.jsonl" if target == "result_log" else tmp_path / "r.jsonl"
    proc = leukedge("agent", "--bundle", bundle, "--source", frames, "--mqtt", "off", "--max-frames", "2",
                    "--outbox", outbox, "--result-log", results)
    assert_refused(proc, f"{target}.path", str(outbox if target == "outbox" else results))
    assert {p.name: p.read_bytes() for p in read_only_dir.iterdir()} == files


def test_not_an_sqlite_outbox_is_refused_untouched(tmp_path, bundle):
    frames = write_images(tmp_path / "frames", n=2, size=64)
    outbox = tmp_path / "notes.txt"
    outbox.write_text("my notes, not an outbox\n" * 100)
    before = outbox.read_bytes()
    proc = leukedge("agent", "--bundle", bundle, "--source", frames, "--mqtt", "off", "--outbox", outbox)
    assert_refused(proc, "outbox.path", "not an SQLite file")
    assert outbox.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["frames", "notes.txt"]


def test_second_agent_on_one_outbox_refuses_naming_the_holder(tmp_path, bundle):
    """Two agents on one outbox.path: the second exits 2 naming the first's pid; the first runs
    on and its queue stays whole (no duplicates, no negative backlog)."""
    import time

    from leukedge.agent_process import AgentProcess, agent_config

    frames = write_images(tmp_path / "frames", n=6, size=64)
    first = AgentProcess(tmp_path, agent_config(tmp_path, bundle, frames, source={"fps": 20})).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "outbox.sqlite.lock").exists():
            time.sleep(0.2)
        while time.monotonic() < deadline and "agent devA" not in first.log():
            time.sleep(0.2)
        second = leukedge("agent", "--config", first.config_path)
        assert_refused(second, "outbox.sqlite", "in use by another agent", f"pid {first.pid}")
        assert first.alive(), first.log()
    finally:
        assert first.terminate() == 0, first.log()
    ids = [json.loads(p)["id"] for t, p in queued(tmp_path / "outbox.sqlite") if t.endswith("/result")]
    assert ids and len(ids) == len(set(ids))
    # the lock went with the process: a new agent starts on the same outbox
    again = leukedge("agent", "--config", first.config_path, "--max-frames", "2")
    assert again.returncode == 0, again.stderr




@pytest.mark.parametrize("case", ["unknown_group", "ragged_inv_cov", "nan_threshold", "wrong_shape_arrays",
                                  "not_npz"])
def test_a_tampered_guard_is_refused_in_one_line(tmp_path, bundle, case):
    """The unfamiliar-input guard comes from the manifest and ood.npz like every bundle file: a
    group the box does not know, a ragged matrix, a NaN threshold, arrays that do not fit the
    features, or a file that is no npz get one line naming it (exit 2), never a traceback."""
    import hashlib

    import numpy as np

    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    m = _manifest(b)
    ood = m["ood"]
    needle = "ood"
    if case == "unknown_group":
        ood["stats"]["colour_of_the_day"] = ood["stats"].pop("stain")
        needle = "unknown group"
    elif case == "ragged_inv_cov":
        ood["stats"]["focus"]["inv_cov"] = [[1.0, 2.0]]
    elif case == "nan_threshold":
        ood["threshold"] = float("nan")
    else:
        path = b / "ood.npz"
        if case == "wrong_shape_arrays":
            with np.load(path) as z:
                arrays = dict(z)
            arrays["directions"] = arrays["directions"][:-1]  # one feature short
            np.savez(path, **arrays)
            needle = "do not fit"
        else:
            path.write_bytes(b"PK\x03\x04 not really")
            needle = "not the guard's arrays"
        entry = next(e for e in m["files"] if e["format"] == "ood")
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # re-hashed: the content is the attack
    _write_manifest(b, m)
    frames = write_images(tmp_path / "frames", n=2, size=64)
    proc = leukedge("agent", "--bundle", b, "--source", frames, "--mqtt", "off", "--check")
    assert_refused(proc, needle)
