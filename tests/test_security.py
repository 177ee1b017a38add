"""The shipped broker security (deploy/mosquitto) against a real Mosquitto and real TLS.

Every broker here is started from the repository's leukedge.conf / bridge.conf as rendered
by install-broker.sh, with certificates from make-certs.sh and users from add-device.sh.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.broker import mosquitto_available
from tests.secure_broker import Recorder, SecureBroker, publish_all, try_connect

pytestmark = pytest.mark.skipif(
    not (mosquitto_available() and shutil.which("openssl") and shutil.which("mosquitto_passwd")),
    reason="needs mosquitto, mosquitto_passwd and openssl (CI installs mosquitto with apt-get)",
)


@pytest.fixture
def secure(tmp_path):
    with SecureBroker(tmp_path / "edge") as b:
        yield b


def test_anonymous_and_wrong_password_are_refused(secure):
    tls, local, ca = secure.tls_port, secure.local_port, secure.ca
    assert try_connect(tls, "devA", secure.password("devA"), ca) == "Success"
    assert try_connect(local, "devA", secure.password("devA")) == "Success"
    for port, use_ca in ((tls, ca), (local, None)):
        assert try_connect(port, None, None, use_ca) == "Not authorized"
        assert try_connect(port, "devA", "wrong-password", use_ca) == "Not authorized"
        assert try_connect(port, "nobody", secure.password("devA"), use_ca) == "Not authorized"
    # Another device's password does not open device A's account.
    assert try_connect(tls, "devA", secure.password("devB"), ca) == "Not authorized"


def test_tls_listener_refuses_plaintext_and_unknown_ca(secure):
    # Plain MQTT to the TLS port gets no CONNACK.
    assert try_connect(secure.tls_port, "devA", secure.password("devA"), None, timeout=2) != "Success"
    # The system CA store does not know the clinic CA: certificate verification fails.
    import ssl

    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.username_pw_set("devA", secure.password("devA"))
    c.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("127.0.0.1", secure.tls_port, keepalive=5)


def test_device_publishes_only_under_its_own_prefix(secure):
    ca = secure.ca
    lab = Recorder(secure.tls_port, "leukedge/#", "lab", secure.password("lab"), ca)
    try:
        rcs = publish_all(secure.tls_port, "devA", secure.password("devA"), ca,
                          [("leukedge/devA/result", b'{"id": "a-1"}')])
        rcs += publish_all(secure.tls_port, "devB", secure.password("devB"), ca,
                           [("leukedge/devA/result", b'{"id": "forged-by-B"}'),
                            ("leukedge/devA/status", b"offline"),
                            ("leukedge/other/result", b'{"id": "stray"}'),
                            ("leukedge/devB/result", b'{"id": "b-1"}')])
        assert rcs == [0] * 5  # MQTT 3.1.1 acknowledges refused publishes too; the ACL drops them
        lab.wait_for(2, timeout=5)
        time.sleep(0.5)  # room for anything forged to (wrongly) arrive
        payloads = [(t, json.loads(p)["id"]) for t, p, _ in lab.messages]
        print("lab saw:", payloads)
        assert payloads == [("leukedge/devA/result", "a-1"), ("leukedge/devB/result", "b-1")]
    finally:
        lab.close()


def test_device_reads_only_its_own_commands(secure):
    ca = secure.ca
    a = Recorder(secure.tls_port, "leukedge/devA/cmd/#", "devA", secure.password("devA"), ca)
    b_spy = Recorder(secure.tls_port, ["leukedge/devA/cmd/#", "leukedge/devA/#", "leukedge/+/result"],
                     "devB", secure.password("devB"), ca)
    try:
        publish_all(secure.tls_port, "lab", secure.password("lab"), ca,
                    [("leukedge/devA/cmd/sample/start", b'{"sample_id": "S1"}')])
        publish_all(secure.tls_port, "devA", secure.password("devA"), ca,
                    [("leukedge/devA/result", b'{"id": "a-1"}')])
        assert a.wait_for(1, timeout=5) == 1
        time.sleep(0.5)
        assert a.topics_seen() == ["leukedge/devA/cmd/sample/start"]
        assert b_spy.topics_seen() == []
        # A device cannot command another device either.
        publish_all(secure.tls_port, "devB", secure.password("devB"), ca,
                    [("leukedge/devA/cmd/sample/end", b"{}")])
        time.sleep(0.5)
        assert a.topics_seen() == ["leukedge/devA/cmd/sample/start"]
    finally:
        a.close()
        b_spy.close()


def test_bridge_queues_at_the_clinic_and_forwards_when_the_uplink_returns(tmp_path):
    """Edge broker bridged over TLS to a central broker that is down while results arrive."""
    central = SecureBroker(tmp_path / "central", devices=(), lab="lab-central",
                           extra_args=("--no-local",), roles={"bridge-clinic1": "bridge"})
    edge = SecureBroker(
        tmp_path / "edge", devices=("devA",), lab="lab",
        extra_args=("--central", f"127.0.0.1:{central.tls_port}", "--site", "clinic1",
                    "--central-ca", central.ca,
                    "--bridge-password-file", central.password_file("bridge-clinic1")))
    conf = (edge.etc / "conf.d" / "leukedge-bridge.conf").read_text()
    assert "cleansession false" in conf and "remote_username bridge-clinic1" in conf
    central.start()
    # A persistent lab session on the central broker, so nothing depends on who connects first.
    lab = Recorder(central.tls_port, "leukedge/#", "lab-central", central.password("lab-central"),
                   central.ca, client_id="lab-feed", clean=False)
    lab.close()
    central.stop()  # the uplink is down from here on
    n = 50
    try:
        edge.start()
        t0 = time.time()
        items = [("leukedge/devA/result", json.dumps({"id": f"devA-1-{i}", "seq": i})) for i in range(n)]
        assert publish_all(edge.local_port, "devA", edge.password("devA"), None, items) == [0] * n
        time.sleep(1.0)
        central.start()  # the uplink returns; the bridge retries with its backoff (5 s first)
        lab = Recorder(central.tls_port, "leukedge/#", "lab-central", central.password("lab-central"),
                       central.ca, client_id="lab-feed", clean=False)
        got = lab.wait_for(n, timeout=60)
        lab.close()
        seqs = [json.loads(p)["seq"] for t, p, _ in lab.messages if t == "leukedge/devA/result"]
        print(f"bridge: queued {n} at the edge, central received {got} after {time.time() - t0:.1f} s")
        assert seqs == list(range(n))
    finally:
        edge.stop()
        central.stop()


# --------------------------------------------------------------------------- the agent itself


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real small bundle (tiny trained custom CNN at 64 px, converted; cached per session)."""
    from leukedge.bundle_factory import make_small_bundle

    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


def tls_agent(workdir, bundle, broker: SecureBroker, device: str, user: str, protocol: str = "3.1.1"):
    from leukedge.agent_process import AgentProcess, agent_config, write_images

    frames = write_images(workdir / "frames", n=10)
    cfg = agent_config(workdir, bundle, frames, f"mqtts://127.0.0.1:{broker.tls_port}", device_id=device,
                       source={"loop": False}, drain_timeout_s=10.0,
                       mqtt={"username": user, "password_file": str(broker.password_file(user)),
                             "tls": {"ca_file": str(broker.ca)}, "protocol": protocol})
    return AgentProcess(workdir, cfg)


def test_agent_over_tls_with_password(tmp_path, bundle, secure):
    from leukedge.agent_process import ResultFeed
    from tests.agent_proc import logged_ids

    feed = ResultFeed(secure.tls_port, username="lab", password=secure.password("lab"), ca=secure.ca,
                      extra_topics=("leukedge/devA/info", "leukedge/devA/status"))
    agent = tls_agent(tmp_path / "agent", bundle, secure, "devA", "devA").start()
    try:
        assert agent.wait(90) == 0
        sent = logged_ids(tmp_path / "agent" / "results.jsonl")
        assert len(sent) == 10 and feed.wait_for(set(sent), 10) == set()
        time.sleep(0.5)
        topics = {t for t, _ in feed.other}
        assert {"leukedge/devA/info", "leukedge/devA/status"} <= topics
        assert secure.password("devA") not in agent.log()
    finally:
        feed.close()
        if agent.alive():
            agent.kill9()


def test_agent_with_another_devices_credentials_cannot_publish_as_it(tmp_path, bundle, secure):
    """device_id devA with devB's account: the broker drops all of it (ACL); over MQTT 5 the
    agent sees each PUBACK's "not authorized" and counts the rejections."""
    from leukedge.agent_process import ResultFeed

    feed = ResultFeed(secure.tls_port, username="lab", password=secure.password("lab"), ca=secure.ca,
                      extra_topics=("leukedge/devA/#",))
    agent = tls_agent(tmp_path / "agent", bundle, secure, "devA", "devB", protocol="5").start()
    try:
        assert agent.wait(90) == 0
        time.sleep(0.5)
        assert feed.ids() == [] and feed.other == []
        log = agent.log()
        rejected = log.count("broker rejected outbox row")
        print(f"\n[impostor] results delivered under leukedge/devA/: 0; rejections the agent counted: {rejected}")
        assert rejected >= 10
    finally:
        feed.close()
        if agent.alive():
            agent.kill9()


def test_password_in_broker_url_is_not_logged(tmp_path, bundle):
    from leukedge.agent_process import AgentProcess, agent_config, write_images

    secret = "UrlSecret4242"
    frames = write_images(tmp_path / "frames", n=2)
    cfg = agent_config(tmp_path, bundle, frames, f"mqtt://devA:{secret}@127.0.0.1:1", source={"loop": False},
                       drain_timeout_s=0.0)
    run = AgentProcess(tmp_path, cfg, name="run").start()
    check = AgentProcess(tmp_path, cfg, name="check").start("--check")
    assert run.wait(60) == 0 and check.wait(60) == 1
    assert secret not in run.log() + check.log()
