"""The kit against an adversary and a clumsy user, end to end through the command line.

Every case asserts the exit code, the one line that names what is wrong, and that nothing
already queued is lost. Sections follow the kinds of input; each is self-contained.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent_proc import CLI, ROOT, write_images

# =========================================================================== shared helpers


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real small bundle (tiny trained custom CNN at 64 px, converted; cached per session)."""
    from tests.bundle_factory import make_small_bundle

    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


def leukedge(*args, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one `error:` line on stderr naming the problem, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def queued(outbox: Path) -> list[tuple[str, bytes]]:
    db = sqlite3.connect(str(outbox))
    try:
        return db.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    finally:
        db.close()


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
    from edge.bundle import FileEntry, bundle_path
    from edge.errors import BundleError

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
    from tests.agent_proc import AgentProcess, ResultFeed, agent_config
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
