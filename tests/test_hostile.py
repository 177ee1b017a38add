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

from tests.agent_proc import CLI, ROOT, blank_png, write_images

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

    from tests.agent_proc import AgentProcess, agent_config

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


def _dataset_with_bad_files(root: Path, per_class: int = 10, bad_in: str = "Benign", n_bad: int = 2) -> list[Path]:
    """A synthetic ALL-layout folder; n_bad files of one class replaced by unreadable ones."""
    from trainer.synth.fields import generate_dataset

    generate_dataset(root, per_class=per_class, size=32, seed=3, progress=False)
    files = sorted((root / "Original" / bad_in).iterdir())
    bad = files[:n_bad]
    for k, path in enumerate(bad):
        path.write_bytes(path.read_bytes()[:40 + k] if k % 2 else f"not an image, file {k}".encode())
    return bad


def test_train_decodes_before_splitting(tmp_path):
    """Unreadable files are in no split list, count or fingerprint: the split equals the one
    made from the folder with those files deleted."""
    from trainer.train import TrainConfig, prepare_data

    data = tmp_path / "data"
    bad = _dataset_with_bad_files(data)
    with_bad = prepare_data(TrainConfig(data=str(data), out="", img_size=32, verbose=0), tmp_path / "run1")
    for path in bad:
        path.unlink()
    without = prepare_data(TrainConfig(data=str(data), out="", img_size=32, verbose=0), tmp_path / "run2")
    listed = {p for s in with_bad.splits.values() for p in (i.path for i in s)}
    assert not listed & set(bad)
    assert with_bad.split_meta["fingerprint"] == without.split_meta["fingerprint"]
    assert with_bad.split_meta["counts"] == without.split_meta["counts"]
    assert {Path(p).name for p, _ in with_bad.split_meta["skipped"]} == {p.name for p in bad}
    for name in ("train", "val", "test"):
        assert len(with_bad.x[name]) == len(with_bad.splits[name]) == len(with_bad.y[name])
        assert (with_bad.x[name] == without.x[name]).all()


def test_train_names_skipped_files_and_refuses_a_class_without_a_test_image(tmp_path):
    data = tmp_path / "data"
    bad = _dataset_with_bad_files(data, per_class=9, n_bad=7)  # Benign keeps 2 usable images
    proc = leukedge("train", "--data", data, "--out", tmp_path / "run", "--arch", "custom_cnn", "--img-size", "32",
                    "--epochs", "1", "--quiet")
    assert_refused(proc, "split has no Benign image")
    for path in bad[:5]:
        assert path.name in proc.stderr  # the first few named ...
    assert "and 2 more" in proc.stderr  # ... then a count


def test_bench_names_skipped_files(tmp_path, bundle):
    data = tmp_path / "data"
    bad = _dataset_with_bad_files(data, per_class=3, n_bad=2)
    proc = leukedge("bench", bundle, "--data", data)
    assert proc.returncode == 0, proc.stderr
    assert all(p.name in proc.stderr for p in bad) and "skipped 2 file(s)" in proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB filesystem (tmpfs) that a test can fill to the last byte and free again."""
    d = tmp_path / "disk"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", d]).returncode:
        pytest.skip("mounting a small tmpfs needs root (the agent test below falls back to RLIMIT_FSIZE)")
    yield d
    subprocess.run(["umount", "-l", d], check=True)


def fill(disk: Path) -> Path:
    """Fill the filesystem of `disk` completely with one file; delete it to free the space."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_outbox_on_a_full_disk_holds_in_memory_then_writes_back(small_disk):
    from edge.outbox import Outbox

    path = small_disk / "o.sqlite"
    ob = Outbox(path, memory_rows=50)
    boot = ob.next_boot()
    first = [ob.put("t/result", f"before-{i}".encode()) for i in range(3)]
    filler = fill(small_disk)
    held = [ob.put("t/result", f"full-{i}".encode() + bytes(3000)) for i in range(60)]  # never raises
    st = ob.stats()
    assert st["disk_error"] and st["in_memory"] == 50 and st["memory_dropped"] == 10
    assert st["backlog"] == 3 + 50
    pending = ob.pending(after=0, limit=1000)
    assert [r.id for r in pending] == first + held[10:]  # file rows, then memory rows, in id order
    assert ob.delete(held[10:15]) == 5  # acknowledged straight from memory: never needs the disk
    filler.unlink()
    ob.retry.delay = 0
    ob.retry._next = 0  # skip the backoff wait
    assert ob.flush() and ob.stats()["disk_error"] is None and ob.stats()["in_memory"] == 0
    ob.close()
    on_disk = queued(path)
    ids = [r[0] for r in sqlite3.connect(str(path)).execute("SELECT id FROM outbox ORDER BY id")]
    assert ids == first + held[15:] and len(on_disk) == 3 + 45  # same ids, same order
    ob = Outbox(path)
    assert ob.next_boot() == boot + 1
    ob.close()


def test_outbox_opened_on_a_full_disk_runs_from_memory(small_disk):
    from edge.outbox import Outbox

    path = small_disk / "o.sqlite"
    ob = Outbox(path)
    ob.next_boot()
    old = ob.put("t/result", b"old")
    ob.close()
    filler = fill(small_disk)
    ob = Outbox(path)  # cannot even map the WAL index: starts in memory
    boot = ob.next_boot()
    assert boot > 1 and ob.stats()["disk_error"]
    new = ob.put("t/result", b"new")
    assert new > old and [r.payload for r in ob.pending(after=old)] == [b"new"]
    filler.unlink()
    ob.retry._next = 0
    assert ob.flush()
    assert [r.payload for r in ob.pending()] == [b"old", b"new"]
    ob.close()
    ob = Outbox(path)
    assert ob.next_boot() == boot + 1  # the boot taken while full was stored once writes worked
    ob.close()


def test_agent_keeps_classifying_on_a_full_disk(tmp_path, bundle, broker, small_disk):
    """Outbox and result log on a disk that fills up mid-run: the agent keeps classifying,
    results still reach the broker (from memory), stats say so, and once space is freed the
    held messages reach the file; exit 0 and every result id accounted for."""
    import time

    from tests.agent_proc import AgentProcess, ResultFeed, agent_config

    frames = write_images(tmp_path / "frames", n=8, size=64)
    cfg = agent_config(small_disk, bundle, frames, broker.url, source={"fps": 15},
                       sample={"fields_per_sample": 0})  # one sample open for the whole run
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/stats", "leukedge/devA/sample"))
    agent = AgentProcess(tmp_path, cfg).start()
    try:
        assert feed.wait_stats(lambda s: s["fields"] >= 5, timeout=90), agent.log()
        filler = fill(small_disk)
        full = feed.wait_stats(lambda s: s["outbox"]["disk_error"] and s["outbox"]["in_memory"] > 0, timeout=60)
        assert full is not None, agent.log()
        during = full["fields"]
        assert feed.wait_stats(lambda s: s["fields"] >= during + 20, timeout=60), agent.log()  # still classifying
        assert agent.alive()
        filler.unlink()
        assert feed.wait_stats(lambda s: s["outbox"]["disk_error"] is None and s["outbox"]["in_memory"] == 0
                               and s["fields"] > during + 20, timeout=60), agent.log()
    finally:
        code = agent.terminate()
        feed.close()
    assert code == 0, agent.log()
    log = agent.log()
    assert "the disk refused a write" in log and "writes work again" in log
    made = {msg["id"] for msg, _arrived in feed.results} | {
        json.loads(p)["id"] for t, p in queued(small_disk / "outbox.sqlite") if t.endswith("/result")}
    boot = next(iter(made)).split("-")[1]
    top = max(int(i.rsplit("-", 1)[1]) for i in made)
    assert made == {f"devA-{boot}-{k}" for k in range(1, top + 1)}  # nothing lost
    samples = [json.loads(p) for t, p in feed.other if t.endswith("/sample")] + [
        json.loads(p) for t, p in queued(small_disk / "outbox.sqlite") if t.endswith("/sample")]
    assert any(s["closed_by"] == "shutdown" and s["n_fields"] == top for s in samples)  # the open sample


def test_broker_state_is_logged_once_per_change(tmp_path, caplog):
    """Unreachable at start: said once (not at every retry) and in last_error; then connected,
    disconnected and unreachable again, each said once."""
    import logging
    import time

    from edge.config import MQTTConfig
    from edge.outbox import Outbox
    from edge.publisher import Publisher
    from tests.broker import Broker, free_port, mosquitto_available

    if not mosquitto_available():
        pytest.skip("mosquitto binary not installed")
    port = free_port()
    cfg = MQTTConfig(url=f"mqtt://127.0.0.1:{port}", reconnect_min_s=0.1, reconnect_max_s=0.2, keepalive_s=5)
    pub = Publisher(cfg, "devA", Outbox(tmp_path / "o.sqlite"))
    caplog.set_level(logging.INFO, logger="edge.publisher")

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    def until(predicate, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)
        return predicate()

    pub.start()
    try:
        assert until(lambda: pub.last_error is not None)
        time.sleep(1.5)  # several retries
        assert "unreachable" in pub.last_error
        assert said("unreachable") == 1
        broker = Broker(tmp_path / "b", port=port).start()
        assert until(pub.connected.is_set) and pub.last_error is None and said("connected to") == 1
        broker.stop()
        assert until(lambda: said("unreachable") == 2, timeout=20), [r.getMessage() for r in caplog.records]
        assert said("disconnected from") == 1
        time.sleep(1.0)
        assert said("unreachable") == 2
    finally:
        pub.stop(timeout=0.5)
        pub.outbox.close()


def test_retained_commands_are_ignored_even_live(tmp_path, bundle, broker):
    """MQTT 5 with Retain As Published: a retained command published while the agent is
    subscribed (and `-r -n`, how a retained message is cleared) is ignored; live commands,
    an empty non-retained payload included, still work."""
    import time

    from tests.agent_proc import AgentProcess, ResultFeed, agent_config
    from tests.secure_broker import client

    frames = write_images(tmp_path / "frames", n=6, size=64)
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/stats",))
    agent = AgentProcess(tmp_path, agent_config(tmp_path, bundle, frames, broker.url, source={"fps": 10})).start()
    lab = client(None, None, None)
    lab.connect("127.0.0.1", broker.port)
    lab.loop_start()
    try:
        assert feed.wait_stats(lambda s: s["mqtt"]["connected"], timeout=90), agent.log()
        topic = "leukedge/devA/cmd/sample/start"
        lab.publish(topic, b'{"sample_id": "RETAINED"}', qos=1, retain=True).wait_for_publish(5)
        lab.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # mosquitto_pub -r -n
        assert feed.wait_stats(lambda s: s["mqtt"]["commands_retained_ignored"] >= 2, timeout=30), agent.log()
        lab.publish(topic, b"", qos=1).wait_for_publish(5)  # empty, not retained: valid
        lab.publish(topic, b'{"sample_id": "LIVE-1"}', qos=1).wait_for_publish(5)
        assert feed.wait_stats(lambda s: s["mqtt"]["commands"] >= 2, timeout=30), agent.log()
        time.sleep(1.0)
    finally:
        lab.loop_stop()
        assert agent.terminate() == 0, agent.log()
        feed.close()
    ids = {msg["sample_id"] for msg, _t in feed.results}
    assert "RETAINED" not in ids and "LIVE-1" in ids
    assert feed.stats()[-1]["mqtt"]["commands_bad"] == 0


_FSIZE_SCRIPT = r"""
import resource, sqlite3, sys
from pathlib import Path
from edge.outbox import Outbox
path = Path(sys.argv[1])
ob = Outbox(path, memory_rows=500)
ob.next_boot()
before = [ob.put("t/result", b"before") for _ in range(3)]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # the kernel refuses to grow any file past this
held = [ob.put("t/result", bytes(4000)) for _ in range(200)]  # never raises
st = ob.stats()
assert st["disk_error"] and 0 < st["in_memory"] < 200, st
assert [r.id for r in ob.pending(limit=1000)] == before + held
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # "space" again
ob.retry._next = 0
assert ob.flush() and ob.stats()["in_memory"] == 0
ob.close()
ids = [i for (i,) in sqlite3.connect(str(path)).execute("SELECT id FROM outbox ORDER BY id")]
assert ids == before + held, (len(ids), len(before + held))
print("ok")
"""


def test_outbox_past_a_file_size_limit_holds_in_memory(tmp_path):
    """The same without root: RLIMIT_FSIZE makes the kernel refuse writes (EFBIG) until lifted."""
    proc = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, tmp_path / "o.sqlite"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


# =========================================================================== frames and sources
# (issue 10 items 3, 6, 11, 13, 14; bad-frame warnings rate-limited; skipped files named)


class TestFramesAndSources:
    """One hostile image or video never stops the agent: each frame is classified or counted
    as bad with its reason, named in the results log, and what was queued stays queued."""

    @staticmethod
    def run_agent(tmp_path: Path, bundle: Path, source: Path, *extra, config: str | None = None):
        """`leukedge agent` offline on `source`: (process, results-log records, outbox rows)."""
        work = tmp_path / "run"
        work.mkdir(exist_ok=True)
        args = ["agent", "--bundle", bundle, "--source", source, "--mqtt", "off", "--backend", "litert",
                "--outbox", work / "outbox.sqlite", "--result-log", work / "results.jsonl", *extra]
        if config:
            (work / "agent.yaml").write_text(config)
            args += ["--config", work / "agent.yaml"]
        proc = leukedge(*args, timeout=300)
        log = work / "results.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        rows = queued(work / "outbox.sqlite") if (work / "outbox.sqlite").exists() else []
        return proc, records, rows

    @staticmethod
    def assert_nothing_lost(records: list[dict], rows) -> None:
        """Offline, every result and sample in the results log is also waiting in the outbox."""
        logged = sorted(r["id"] for r in records if r["type"] in ("result", "sample") and "id" in r)
        outbox = sorted(json.loads(p)["id"] for t, p in rows if t.endswith(("/result", "/sample")))
        assert logged == outbox and logged

    @staticmethod
    def skipped(records: list[dict]) -> dict[str, str]:
        return {r["frame"]: r["reason"] for r in records if r["type"] == "skipped"}

    def test_hostile_images_in_a_folder(self, tmp_path, bundle):
        """A 60000x20 PNG used to end the agent with exit 1 (the files after it never read); a
        16000x16000 PNG (750 kB) made it peak at 1.6 GB; a corrupt `grayscale_dtype.jpg` was
        counted as grayscale. Now: each is processed or skipped with its reason, the run goes on."""
        import cv2
        import numpy as np

        folder = write_images(tmp_path / "in", n=3, size=96)
        rng = np.random.default_rng(5)
        cv2.imwrite(str(folder / "a_panorama.png"), rng.integers(0, 256, (20, 60000, 3), dtype=np.uint8))
        (folder / "b_bomb.png").write_bytes(blank_png(16000, 16000))
        (folder / "c_grayscale_dtype.jpg").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
        proc, records, rows = self.run_agent(tmp_path, bundle, folder)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        fields = sorted((r["frame"]["w"], r["frame"]["h"]) for r in records if r["type"] == "result")
        assert fields == [(96, 96)] * 3 + [(60000, 20)]
        assert self.skipped(records) == {"b_bomb.png": "too_large", "c_grayscale_dtype.jpg": "corrupt"}
        self.assert_nothing_lost(records, rows)
        # the same folder looped: it used to crash at every restart
        shutil.rmtree(tmp_path / "run")
        proc, records, rows = self.run_agent(tmp_path, bundle, folder, "--loop", "--max-frames", "18",
                                             "--gate", "continuous")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert sum(r["type"] == "result" for r in records) == 12
        assert [r["frame"] for r in records if r["type"] == "skipped"] == ["b_bomb.png", "c_grayscale_dtype.jpg"]
        self.assert_nothing_lost(records, rows)

    def test_video_broken_part_way_is_reported(self, tmp_path, bundle):
        """A video cut in the middle used to end with exit 0 after half its fields and no word.
        Now the fields before the break are kept and the run ends with one error line, exit 2."""
        import cv2
        import numpy as np

        path = tmp_path / "v.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 96))
        rng = np.random.default_rng(0)
        for _ in range(120):
            w.write(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
        w.release()
        data = path.read_bytes()
        (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
        proc, records, rows = self.run_agent(tmp_path, bundle, tmp_path / "cut.avi", "--gate", "continuous")
        line = assert_refused(proc, "cut.avi", "stops decoding", "120")
        assert "Traceback" not in proc.stderr
        results = [r for r in records if r["type"] == "result"]
        assert 30 < len(results) < 90, line
        self.assert_nothing_lost(records, rows)
        shutil.rmtree(tmp_path / "run")
        proc, records, _ = self.run_agent(tmp_path, bundle, path, "--gate", "continuous")
        assert proc.returncode == 0 and sum(r["type"] == "result" for r in records) == 120, proc.stderr[-2000:]

    def test_a_folder_of_images_classifies_each_with_the_default_gate(self, tmp_path, bundle):
        """`leukedge agent --source folder/` used to give 0 fields with the default still gate."""
        import cv2
        import numpy as np

        folder = tmp_path / "scans"
        folder.mkdir()
        rng = np.random.default_rng(3)
        for i in range(5):
            img = np.full((128, 128, 3), 225, np.uint8)
            for _ in range(12):
                x, y = (int(v) for v in rng.integers(12, 116, 2))
                cv2.circle(img, (x, y), int(rng.integers(4, 12)), tuple(int(c) for c in rng.integers(40, 160, 3)), -1)
            cv2.imwrite(str(folder / f"scan-{i}.png"), img)
        cv2.imwrite(str(folder / "scan-9-blank.png"), np.full((128, 128, 3), 210, np.uint8))
        proc, records, rows = self.run_agent(tmp_path, bundle, folder)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert sum(r["type"] == "result" for r in records) == 5
        self.assert_nothing_lost(records, rows)
        shutil.rmtree(tmp_path / "run")
        proc, records, _ = self.run_agent(tmp_path, bundle, folder / "scan-2.png")  # a one-image source
        assert proc.returncode == 0 and sum(r["type"] == "result" for r in records) == 1, proc.stderr[-2000:]

    def test_a_source_that_yields_no_field_says_why(self, tmp_path, bundle):
        """All images blurred: no field, and the log says which gate setting rejected them."""
        import cv2
        import numpy as np

        folder = tmp_path / "blurred"
        folder.mkdir()
        for i in range(4):  # cell-like discs, out of focus: contrast kept, sharpness gone
            img = np.full((96, 96, 3), 225, np.uint8)
            for x, y in np.random.default_rng(i).integers(10, 86, (10, 2)):
                cv2.circle(img, (int(x), int(y)), 7, (90, 60, 140), -1)
            cv2.imwrite(str(folder / f"b{i}.png"), cv2.GaussianBlur(img, (0, 0), 3))
        proc, records, _ = self.run_agent(tmp_path, bundle, folder)
        assert proc.returncode == 0 and not [r for r in records if r["type"] == "result"]
        why = [line for line in proc.stderr.splitlines() if "no field" in line]
        assert len(why) == 1 and "4 blurred" in why[0] and "gate.focus_threshold" in why[0], proc.stderr[-2000:]

    def test_bad_frame_warnings_are_rate_limited_but_all_counted(self, tmp_path, bundle):
        """300 corrupt files: a few warning lines, every one counted in stats and named in the log."""
        folder = write_images(tmp_path / "in", n=2, size=96)
        for i in range(300):
            (folder / f"junk-{i:03d}.jpg").write_bytes(b"\xff\xd8 not an image %d" % i)
        proc, records, rows = self.run_agent(tmp_path, bundle, folder, "--gate", "continuous")
        assert proc.returncode == 0, proc.stderr[-2000:]
        warnings = [line for line in proc.stderr.splitlines() if "bad frame skipped" in line]
        assert 1 <= len(warnings) <= 20, len(warnings)
        assert len(self.skipped(records)) == 300 and set(self.skipped(records).values()) == {"corrupt"}
        final = [line for line in proc.stderr.splitlines() if "stats:" in line][-1]
        assert "bad frames 300" in final, final
        self.assert_nothing_lost(records, rows)

    def test_backend_threads_follow_the_allowed_cores(self, tmp_path, bundle):
        """LiteRT's default was 1 thread whatever the box; now the allowed cores (at most 4)
        unless `backend.threads` says otherwise."""
        folder = write_images(tmp_path / "in", n=2, size=96)
        cores = sorted(os.sched_getaffinity(0))
        want = min(len(cores), 4)
        proc, _, _ = self.run_agent(tmp_path, bundle, folder, "--gate", "continuous")
        assert proc.returncode == 0 and f"litert-cpu, {want} CPU threads" in proc.stderr, proc.stderr[-2000:]
        shutil.rmtree(tmp_path / "run")
        proc, _, _ = self.run_agent(tmp_path, bundle, folder, "--gate", "continuous",
                                    config=f"bundle: {bundle}\nbackend: {{threads: 1}}\n")
        assert proc.returncode == 0 and "litert-cpu, 1 CPU threads" in proc.stderr, proc.stderr[-2000:]
