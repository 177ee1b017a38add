"""Hostile input on the fleet channel and the update path (issue 20): a deeply nested JSON command,
a paho network thread that dies anyway, release numbers past any sane bound, pack member names
longer than a file system takes, stale partial transfers and a flood of queued chunks.

Through the command line, a real Mosquitto and the agent as a real process, as the other
tests/test_hostile_*.py do."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from leukedge.agent_process import AgentProcess, ResultFeed, write_images
from tests.hostile import assert_refused, leukedge
from tests.update_kit import Kit, events, wait_for

pytestmark = pytest.mark.slow

DEEP = b"[" * 1500 + b"]" * 1500


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return Kit(tmp_path_factory.mktemp("kit"))


def _lab(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lab-{time.monotonic_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def _sign_raw(bundle: Path, key_path: Path, release: int) -> None:
    """What an old `leukedge sign` (or a hand-edited manifest) produced: any release, validly signed."""
    from converter.signing import load_private_key
    from edge.manifest import MANIFEST
    from edge.trust import SIGNATURE

    data = json.loads((bundle / MANIFEST).read_text())
    data["release"] = release
    text = json.dumps(data, indent=2) + "\n"
    (bundle / MANIFEST).write_text(text)
    (bundle / SIGNATURE).write_bytes(load_private_key(key_path).sign(text.encode()))


# =========================================================================== a deep JSON command


def test_deep_json_commands_do_not_stop_result_delivery(kit, broker, tmp_path):
    """`[`*1500 + `]`*1500 on cmd/bundle/chunk and 1 kB of `[` on cmd/sample/start (trust keys
    configured): both refused in one line each, counted, and results keep arriving."""
    frames = write_images(tmp_path / "frames", n=8)
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/stats",))
    agent = AgentProcess(tmp_path, kit.config(tmp_path, frames, broker.url)).start()
    lab = _lab(broker.port)
    try:
        assert wait_for(lambda: len(feed.ids()) >= 5, 90), agent.log()
        lab.publish("leukedge/devA/cmd/bundle/chunk", DEEP, qos=1).wait_for_publish(5)
        lab.publish("leukedge/devA/cmd/sample/start", b"[" * 1024, qos=1).wait_for_publish(5)
        stats = feed.wait_stats(lambda s: s["mqtt"]["commands_bad"] >= 2, timeout=30)
        assert stats is not None, agent.log()
        n = len(feed.ids())
        assert wait_for(lambda: len(feed.ids()) >= n + 20, 60), f"delivery stopped at {n}\n{agent.log()[-3000:]}"
        assert stats["mqtt"]["connected"] is True
        assert agent.alive()
    finally:
        _close(lab)
        assert agent.terminate() == 0, agent.log()
        feed.close()
    log = agent.log()
    assert "bundle/chunk: chunk must be one flat JSON object" in log
    assert "sample/start payload: JSON nested too deeply" in log
    assert "Traceback" not in log and "RecursionError" not in log


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end, on purpose
def test_a_dead_network_thread_is_noticed_and_replaced(tmp_path, broker, caplog):
    """A failure no callback guard foresaw ends paho's thread: pump() notices, the state goes down
    (connected false, last_error says why), one warning, a new connection, and queued rows still go."""
    from edge.config import MQTTConfig
    from edge.outbox import Outbox
    from edge.publisher import Publisher

    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lab-sub")
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("leukedge/devA/result", 1)
    sub.loop_start()
    cfg = MQTTConfig(url=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5)
    pub = Publisher(cfg, "devA", Outbox(tmp_path / "o.sqlite"))
    caplog.set_level(logging.INFO, logger="edge.publisher")
    pub.start()
    lab = _lab(broker.port)
    try:
        assert wait_for(pub.connected.is_set, 10)
        guarded = pub.client.on_message

        def boom(client, userdata, msg):
            raise RuntimeError("unforeseen")

        pub.client.on_message = boom  # an unguarded failure: the thread ends as it did before the guard

        def down() -> bool:  # (published again until the subscription has taken effect)
            lab.publish("leukedge/devA/cmd/sample/end", b"", qos=1).wait_for_publish(5)
            pub.pump()
            return not pub.stats()["connected"]

        assert wait_for(down, 10), "a dead network thread went unnoticed"
        pub.client.on_message = guarded
        assert "network thread" in pub.stats()["last_error"]
        # each death noticed and said once (a repeated command may kill the new thread once more
        # before the guarded handler is back)
        restarts = pub.stats()["network_restarts"]
        assert restarts >= 1
        assert sum("network thread stopped" in r.getMessage() for r in caplog.records) == restarts
        for i in range(5):
            pub.outbox.put(pub.topic("result"), json.dumps({"i": i}).encode())

        def delivered() -> bool:
            pub.pump()
            return len(got) >= 5

        assert wait_for(delivered, 20), (pub.stats(), got)
        assert pub.stats()["connected"] and pub.stats()["network_restarts"] == restarts  # no death once guarded
        assert wait_for(lambda: lab.publish("leukedge/devA/cmd/sample/end", b"", qos=1) and pub.commands, 10)
    finally:
        _close(lab)
        _close(sub)
        pub.stop(timeout=0.5)
        pub.outbox.close()


# =========================================================================== release numbers


@pytest.mark.parametrize("release", ["9223372036854775808", "1" + "0" * 400, "2147483648", "0", "-3"])
def test_sign_refuses_a_release_out_of_bounds(kit, tmp_path, release):
    import shutil

    b = Path(shutil.copytree(kit.a, tmp_path / "b"))
    keys = Path(shutil.copytree(kit.keys, tmp_path / "keys"))
    (keys / "signing.release").write_text("7\n")
    before = (b / "manifest.json").read_bytes()
    proc = leukedge("sign", b, "--key", keys / "signing.key", "--release", release)
    line = assert_refused(proc, "--release", "2147483647")
    assert len(line) < 200, line
    assert (b / "manifest.json").read_bytes() == before
    assert (keys / "signing.release").read_text() == "7\n"


def test_sign_refuses_a_counter_out_of_bounds(kit, tmp_path):
    import shutil

    b = Path(shutil.copytree(kit.a, tmp_path / "b"))
    keys = Path(shutil.copytree(kit.keys, tmp_path / "keys"))
    for counter in ("9223372036854775808", "2147483647"):
        (keys / "signing.release").write_text(counter + "\n")
        line = assert_refused(leukedge("sign", b, "--key", keys / "signing.key"), "signing.release")
        assert len(line) < 300, line
    assert leukedge("sign", b, "--key", keys / "signing.key", "--release", "5").returncode == 0
    assert (keys / "signing.release").read_text() == "2147483647\n"  # never lowered


def _tar(out: Path, members: list[tuple[str, bytes]]) -> Path:
    """A pack written by hand (edge.pack.pack itself refuses these bundles)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def _huge_release_pack(kit, tmp_path: Path, release: int) -> Path:
    import shutil

    from edge.manifest import load_manifest

    b = Path(shutil.copytree(kit.b, tmp_path / f"huge-{len(str(release))}"))
    _sign_raw(b, kit.keys / "signing.key", release)
    names = ["manifest.json", "manifest.sig", *[e.path for e in load_manifest(kit.b).files]]
    return _tar(tmp_path / f"huge-{len(str(release))}.leukedge", [(n, (b / n).read_bytes()) for n in names])


def _long_name_pack(kit, tmp_path: Path, length: int) -> Path:
    """B's signed manifest and signature plus one member whose name is `length` characters."""
    return _tar(tmp_path / f"long-{length}.leukedge", [(n, (kit.b / n).read_bytes()) for n in
                                                       ("manifest.json", "manifest.sig")]
                + [("m" * length + ".tflite", b"x")])


def test_verify_refuses_huge_releases_and_long_member_names(kit, tmp_path):
    """A validly signed manifest with release 2**63 or 10**400: refused by `verify`, naming the field.
    A member name of 300 or 5,000 characters: refused by name, in one short line (exit 2)."""
    pub = kit.keys / "signing.pub"
    for release in (2**63, 10**400):
        line = assert_refused(leukedge("verify", _huge_release_pack(kit, tmp_path, release), "--pub", pub), "release")
        assert len(line) < 300 and str(release)[:30] not in line, line
    for length in (300, 5000):
        line = assert_refused(leukedge("verify", _long_name_pack(kit, tmp_path, length), "--pub", pub), "too long")
        assert len(line) < 200 and "internal error" not in line, line


def test_install_refuses_huge_releases_and_long_names_then_takes_a_normal_one(kit, tmp_path):
    """Through a running agent: release 2**63 and 10**400 are rejected with a reason naming the
    release, a long member name by name; afterwards the normal release 2 still installs."""
    frames = write_images(tmp_path / "frames", n=6)
    agent = AgentProcess(tmp_path, kit.config(tmp_path, frames)).start()
    cfg = agent.config_path
    try:
        assert wait_for(lambda: (tmp_path / "results.jsonl").exists(), 90), agent.log()
        for release in (2**63, 10**400):
            proc = leukedge("install", _huge_release_pack(kit, tmp_path, release), "--config", cfg, timeout=150)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            ev = json.loads(proc.stdout.strip().splitlines()[-1])
            assert ev["status"] == "rejected" and "release" in ev["reason"] and ev["release"] is None, ev
        proc = leukedge("install", _long_name_pack(kit, tmp_path, 300), "--config", cfg, timeout=150)
        ev = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == 2 and "too long" in ev["reason"] and "internal error" not in ev["reason"], ev
        assert len(ev["reason"]) < 200, ev
        proc = leukedge("install", kit.b_pack, "--config", cfg, timeout=150)
        assert proc.returncode == 0, proc.stdout + proc.stderr + agent.log()[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["release"] == 2
    finally:
        assert agent.terminate() == 0, agent.log()
    assert all(len(str(e["release"])) <= 10 for e in events(tmp_path) if e["release"] is not None)


# =========================================================================== chunk reassembly


def test_stale_partial_transfers_expire_at_start(kit, tmp_path):
    """A partial transfer untouched for two days goes when the agent starts; a fresh one stays
    (and is resumable); neither waits for two newer transfers to push it out."""
    incoming = tmp_path / "store" / "incoming"
    stale, fresh = incoming / ("a" * 64), incoming / ("b" * 64)
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "total").write_text("3\n")
        (d / "000000").write_bytes(b"x" * 1000)
    old = time.time() - 2 * 86400
    for p in (stale / "total", stale / "000000", stale):
        os.utime(p, (old, old))
    frames = write_images(tmp_path / "frames", n=6)
    agent = AgentProcess(tmp_path, kit.config(tmp_path, frames)).start()
    try:
        assert wait_for(lambda: not stale.exists(), 90), agent.log()
        time.sleep(1.5)  # a few expiry scans
        assert (fresh / "000000").is_file()
    finally:
        assert agent.terminate() == 0, agent.log()
    assert "dropped: untouched for 48" in agent.log()


def test_partials_held_stay_under_max_bytes_and_are_indexed(tmp_path):
    """Partial transfers together stay under update.max_bytes (oldest dropped first, never the one
    being fed); a restart resumes from what is on disk."""
    from edge.chunks import Chunk, Reassembler

    r = Reassembler(tmp_path / "in", max_bytes=10_000)
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    for i in range(7):
        r.add(Chunk(a, i, 10, b"x" * 1000))
    time.sleep(0.05)  # b is the newer one
    for i in range(3):
        r.add(Chunk(b, i, 10, b"y" * 1000))
    assert (tmp_path / "in" / a).is_dir()  # 10 kB held: at the budget, not over it
    r.add(Chunk(b, 3, 10, b"y" * 1000))
    assert not (tmp_path / "in" / a).exists() and (tmp_path / "in" / b).is_dir()
    r2 = Reassembler(tmp_path / "in", max_bytes=10_000)
    progress, pack = r2.add(Chunk(b, 9, 10, b"y" * 1000))
    assert progress.received == 5 and progress.missing == [4, 5, 6, 7, 8] and pack is None


def test_update_queue_is_bounded(kit, tmp_path):
    """A flood of chunks cannot grow the update job queue without bound: beyond MAX_JOBS, or beyond
    update.max_bytes of queued chunk data, a chunk is dropped (counted, rate-limited log); the
    sender re-sends what the transfer status lists as missing."""
    import yaml

    from edge.chunks import Chunk
    from edge.config import load_config
    from edge.update import MAX_JOBS, Updater

    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(kit.config(tmp_path, write_images(tmp_path / "frames", n=1),
                                              update={"max_bytes": 1_000_000})))
    up = Updater(load_config(path))  # its worker is not started: nothing drains the queue
    sha = hashlib.sha256(b"p").hexdigest()
    taken = [up.submit_chunk(Chunk(sha, i % 1000, 1000, b"z" * 10)) for i in range(MAX_JOBS + 100)]
    assert taken.count(True) == MAX_JOBS and up.jobs.qsize() == MAX_JOBS and up.dropped == 100
    assert up.submit_rollback() is False
    big = Updater(load_config(path))
    assert big.submit_chunk(Chunk(sha, 0, 4, b"z" * 600_000))  # one chunk always fits an empty queue
    assert not big.submit_chunk(Chunk(sha, 1, 4, b"z" * 600_000)) and big.jobs.qsize() == 1
