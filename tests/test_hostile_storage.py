"""Hostile input, end to end: unreadable training files, a full disk, broker outages, retained commands."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from leukedge.agent_process import write_images
from tests.agent_proc import ROOT
from tests.hostile import assert_refused, bundle, leukedge, queued  # noqa: F401  (bundle: a fixture)

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

    from leukedge.agent_process import AgentProcess, ResultFeed, agent_config

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

    from leukedge.agent_process import AgentProcess, ResultFeed, agent_config, client

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


