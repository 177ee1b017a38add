"""Faults, with real processes: a killed broker, a killed agent, a vanished source, a full
outbox, a refused password. Each test is bounded in time, cleans up its processes, and
prints its figures (run with -s to see them).

The agent is `leukedge agent --config` in its own process on a replay image folder with
the continuous gate (every frame is a field); the broker is a real Mosquitto; the lab is a
subscriber with a persistent session that de-duplicates by message id.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from leukedge.agent_process import AgentProcess, ResultFeed, agent_config, write_images
from tests.agent_proc import logged_ids, outbox_ids
from tests.broker import Broker, free_port, mosquitto_available

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed (CI installs it)")

# DESIGN and the issue ask for a ~30 s outage; LEUKEDGE_FAULT_OUTAGE_S shortens it locally.
OUTAGE_S = float(os.environ.get("LEUKEDGE_FAULT_OUTAGE_S", "30"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real small bundle (tiny trained custom CNN at 64 px, converted; cached per session)."""
    from leukedge.bundle_factory import make_small_bundle

    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def replay(tmp_path):
    return write_images(tmp_path / "fields", n=40)


class PersistentBroker(Broker):
    """Mosquitto that keeps sessions on disk (autosave every second), so a lab subscriber's
    persistent session survives a kill -9 of the broker as it would in production."""

    def __init__(self, workdir):
        super().__init__(workdir)
        (self.workdir / "db").mkdir(exist_ok=True)
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {self.workdir}/db/\nautosave_interval 1\n")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None


@pytest.fixture
def pbroker(tmp_path):
    b = PersistentBroker(tmp_path / "broker").start()
    time.sleep(1.2)  # let one autosave pass before anything depends on it
    yield b
    b.stop()


def report(name: str, figures: dict) -> None:
    print(f"\n[{name}] sent {figures['sent']}  delivered {figures['delivered']}  duplicates "
          f"{figures['duplicates']}  max delay {figures['max_delay_s']} s  in order {figures['in_order']}")


def no_traceback(log: str) -> None:
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.slow
def test_broker_killed_mid_stream_loses_nothing(tmp_path, bundle, replay, pbroker):
    """>= 500 fields at 25 fields/s; the broker is killed (-9) after ~5 s and restarted
    OUTAGE_S later; every id reaches the lab, in order, after de-duplication."""
    fields = max(500, int((OUTAGE_S + 10) * 25))
    feed = ResultFeed(pbroker.port)
    agent = AgentProcess(tmp_path / "agent", agent_config(
        tmp_path / "agent", bundle, replay, pbroker.url, max_frames=fields,
        source={"fps": 25.0}, drain_timeout_s=30.0))
    try:
        agent.start()
        deadline = time.monotonic() + 60
        while len(feed.ids()) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(feed.ids()) >= 100, agent.log()[-2000:]
        pbroker.kill9()
        t_kill = time.monotonic()
        time.sleep(OUTAGE_S)
        pbroker.start()
        outage = time.monotonic() - t_kill
        assert agent.wait(timeout=fields / 25 + 60) == 0
        sent = logged_ids(tmp_path / "agent" / "results.jsonl")
        missing = feed.wait_for(set(sent), timeout=30)
        figures = feed.figures(sent)
        report(f"broker down {outage:.0f} s", figures)
        assert len(sent) == fields and not missing, figures
        assert figures["delivered"] == fields and figures["in_order"]
        log = agent.log()
        no_traceback(log)
        assert "disconnected" in log and outbox_ids(tmp_path / "agent" / "outbox.sqlite") == []
    finally:
        feed.close()
        if agent.alive():
            agent.kill9()


@pytest.mark.slow
def test_agent_kill9_then_restart_delivers_everything_written(tmp_path, bundle, replay, pbroker):
    """An unpaced replay (hundreds of fields/s) loses its broker for 2 s, so a backlog builds
    and messages are in flight, and is then killed with SIGKILL; a new agent on the same
    outbox delivers every result written before the kill."""
    feed = ResultFeed(pbroker.port)
    work = tmp_path / "agent"
    cfg = agent_config(work, bundle, replay, pbroker.url)
    first = AgentProcess(work, cfg, name="first").start()
    second = AgentProcess(work, cfg, name="second")
    try:
        deadline = time.monotonic() + 60
        while len(feed.ids()) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        pbroker.kill9()
        time.sleep(2.0)
        first.kill9()
        written = logged_ids(work / "results.jsonl")
        queued = outbox_ids(work / "outbox.sqlite")
        expected = list(dict.fromkeys(written + queued))
        arrived_before = len(set(feed.ids()) & set(expected))
        pbroker.start()
        second.start()
        missing = feed.wait_for(set(expected), timeout=60)
        deadline = time.monotonic() + 60  # the restarted agent is live (a new boot) before SIGTERM
        while not any(i.startswith("devA-2-") for i in feed.ids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.terminate() == 0  # SIGTERM: flush, offline, exit 0
        figures = feed.figures(expected)
        report("agent kill -9", figures)
        print(f"[agent kill -9] written before the kill {len(expected)}, of which queued in the outbox "
              f"{len(queued)} and delivered before the kill {arrived_before}")
        assert not missing and figures["delivered"] == len(expected) and figures["in_order"], figures
        assert len(queued) > 100  # the kill really left a backlog behind
        assert all(i.startswith("devA-1-") for i in expected)
        no_traceback(second.log())
    finally:
        feed.close()
        for a in (first, second):
            if a.alive():
                a.kill9()


def test_source_vanishes_and_returns(tmp_path, bundle, replay, broker):
    """The replay folder disappears mid-run (moved away) and comes back: the watchdog retries
    with backoff, stats say `reopening` with the reason, then results flow again."""
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/stats",))
    agent = AgentProcess(tmp_path / "agent", agent_config(
        tmp_path / "agent", bundle, replay, broker.url, source={"fps": 50.0},
        mqtt={"stats_interval_s": 0.5}))
    try:
        agent.start()
        assert feed.wait_stats(lambda s: s["fields"] > 20, 60), agent.log()[-2000:]
        away = replay.with_name("moved-away")
        replay.rename(away)
        t_gone = time.monotonic()
        down = feed.wait_stats(lambda s: s["source"]["state"] == "reopening" and s["source"]["failures"] >= 2, 20)
        assert down is not None, agent.log()[-2000:]
        time.sleep(max(0.0, 4.0 - (time.monotonic() - t_gone)))
        failures_while_gone = feed.stats()[-1]["source"]["failures"]
        away.rename(replay)
        before = len(feed.ids())
        up = feed.wait_stats(lambda s: s["source"]["state"] == "open" and s["source"]["reopens"] > down["source"]["reopens"]
                        and s["fields"] > down["fields"], 20)
        assert up is not None and feed.wait_for({"never"}, 1.0) and len(feed.ids()) > before
        print(f"\n[source vanished ~4 s] failures {failures_while_gone}, last error {down['source']['last_error']!r}, "
              f"reopens {up['source']['reopens']}, agent alive {agent.alive()}")
        assert "not found" in down["source"]["last_error"]
        assert failures_while_gone <= 8  # backoff 0.2 s doubling to 2 s: ~4 tries in 4 s, not 80
        assert agent.terminate() == 0
        log = agent.log()
        no_traceback(log)
        assert len(re.findall(r"WARNING edge.sources.watchdog: source: .*not found", log)) == 1  # said once
    finally:
        feed.close()
        if agent.alive():
            agent.kill9()


def test_absent_camera_is_retried_not_fatal(tmp_path, bundle, broker):
    """A live source that cannot open (no /dev/video97 here) keeps being retried with backoff;
    the agent stays up, connected, and reports the state in stats."""
    feed = ResultFeed(broker.port, extra_topics=("leukedge/devA/stats",))
    agent = AgentProcess(tmp_path / "agent", agent_config(
        tmp_path / "agent", bundle, "/dev/video97", broker.url, mqtt={"stats_interval_s": 0.5}))
    try:
        agent.start()
        s = feed.wait_stats(lambda s: s["source"]["failures"] >= 3, 30)
        assert s is not None and s["source"]["state"] == "reopening" and s["fields"] == 0, agent.log()[-2000:]
        assert agent.alive() and s["mqtt"]["connected"]
        print(f"\n[camera absent] stats source {s['source']}")
        assert agent.terminate() == 0
        no_traceback(agent.log())
    finally:
        feed.close()
        if agent.alive():
            agent.kill9()


def test_outbox_full_drops_oldest_and_counts(tmp_path, bundle, replay):
    """No broker reachable and an outbox of 50 rows: the oldest rows go, counted; the agent
    runs to the end and says so once."""
    work = tmp_path / "agent"
    dead = f"mqtt://127.0.0.1:{free_port()}"
    agent = AgentProcess(work, agent_config(work, bundle, replay, dead, max_frames=400,
                                            outbox={"max_rows": 50}, drain_timeout_s=0.0)).start()
    try:
        assert agent.wait(120) == 0
    finally:
        if agent.alive():
            agent.kill9()
    log = agent.log()
    no_traceback(log)
    assert len(re.findall(r"WARNING edge.outbox: outbox .* full", log)) == 1
    final = re.findall(r"stats: .* (\d+) fields, backlog (\d+), dropped (\d+)", log)[-1]
    fields, backlog, dropped = map(int, final)
    written = logged_ids(work / "results.jsonl")
    samples = logged_ids(work / "results.jsonl", kind="sample")
    kept = outbox_ids(work / "outbox.sqlite")
    print(f"\n[outbox full] fields {fields}, messages written {len(written) + len(samples)}, "
          f"kept {backlog}, dropped {dropped}")
    assert fields == 400 and backlog == 50
    assert dropped == len(written) + len(samples) - 50
    assert kept == written[-len(kept):]  # the newest results are the ones kept


def test_refused_password_one_error_backoff_no_secret(tmp_path, bundle, replay):
    """The broker refuses the agent's password: one clear error line, retries with backoff
    (not a tight loop), the process stays up and keeps its results, the secret is never logged."""
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd not installed")
    from tests.secure_broker import SecureBroker

    secret = "Wr0ngButSecretPassw0rd"
    pw_file = tmp_path / "mqtt.password"
    pw_file.write_text(secret + "\n")
    with SecureBroker(tmp_path / "broker", devices=("devA",)) as b:
        work = tmp_path / "agent"
        cfg = agent_config(work, bundle, replay, f"mqtt://127.0.0.1:{b.local_port}", source={"fps": 20.0},
                           mqtt={"username": "devA", "password_file": str(pw_file)})
        cfg["drain_timeout_s"] = 2.0
        t0 = time.monotonic()
        agent = AgentProcess(work, cfg).start()
        try:
            time.sleep(8)
            assert agent.alive()
            assert agent.terminate() == 0
            elapsed = time.monotonic() - t0
        finally:
            if agent.alive():
                agent.kill9()
        check = AgentProcess(work, cfg, name="check").start("--check")
        assert check.wait(60) == 1
        broker_log = b.log()
    log, check_out = agent.log(), check.log()
    attempts = len(re.findall(r"not authori[sz]ed", broker_log))
    refused = [line for line in log.splitlines() if "refused the connection" in line]
    print(f"\n[password refused] {attempts} attempts in {elapsed:.0f} s (incl. --check); agent said: {refused}")
    assert len(refused) == 1 and "ERROR" in refused[0] and "retrying with backoff" in refused[0]
    # Backoff from 0.5 s doubling to 2 s: about one try per 2 s once grown; without growth
    # it would be two per second, and a crash loop would also show as a dead process above.
    assert 3 <= attempts <= elapsed / 1.5 + 3
    for text in (log, check_out, (work / "results.jsonl").read_text(), broker_log):
        assert secret not in text
    assert re.search(r"broker +FAILED: .*refused", check_out)
    assert outbox_ids(work / "outbox.sqlite") == logged_ids(work / "results.jsonl")  # nothing lost
    no_traceback(log + check_out)
