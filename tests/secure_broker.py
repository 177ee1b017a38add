"""The shipped edge-broker config (deploy/mosquitto) running for real on free 127.0.0.1 ports.

`install-broker.sh --etc DIR` renders the repository's leukedge.conf, makes certificates with
make-certs.sh and users with add-device.sh into a temporary tree; a `tests.broker.Broker`
then runs mosquitto on it. Also small paho helpers: connect with or without TLS and
credentials, and a subscriber that records what it receives.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path


from leukedge.agent_process import client
from tests.broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[1]
MOSQ = ROOT / "deploy" / "mosquitto"


def sh(*args, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check, timeout=120, **kw)


class SecureBroker:
    """TLS + password + ACL broker from deploy/mosquitto, with device users and a lab user."""

    def __init__(self, workdir: Path, devices=("devA", "devB"), lab: str = "lab", extra_args=(), roles=None):
        self.workdir = Path(workdir)
        self.etc = self.workdir / "etc"
        self.data = self.workdir / "data"
        self.has_local = "--no-local" not in extra_args
        self.tls_port = free_port()
        self.local_port = free_port()
        while self.local_port == self.tls_port:  # free_port may hand out a just-released port twice
            self.local_port = free_port()
        sh(MOSQ / "install-broker.sh", "--etc", self.etc, "--data", self.data,
           "--tls-port", self.tls_port, "--local-port", self.local_port,
           "--host", "localhost", "--ip", "127.0.0.1", "--lab-user", lab,
           *[a for d in devices for a in ("--device", d)], *extra_args)
        for name, role in (roles or {}).items():
            sh(MOSQ / "add-device.sh", "--etc", self.etc / "leukedge", "--role", role, name)
        self.broker = Broker(self.workdir / "run", port=self.tls_port)
        # Running as root (CI containers), mosquitto would drop to its own user and then
        # could not read certificates under a private temp dir: keep root in tests only.
        keep_root = "user root\n" if os.geteuid() == 0 else ""
        self.broker.conf.write_text(
            f"persistence true\npersistence_location {self.data}/\n{keep_root}"
            f"include_dir {self.etc}/conf.d\n"
        )
        self.data.mkdir(parents=True, exist_ok=True)

    @property
    def ca(self) -> Path:
        return self.etc / "leukedge" / "certs" / "ca.crt"

    def password(self, name: str) -> str:
        return (self.etc / "leukedge" / "secrets" / f"{name}.password").read_text().strip()

    def password_file(self, name: str) -> Path:
        return self.etc / "leukedge" / "secrets" / f"{name}.password"

    def start(self) -> "SecureBroker":
        self.broker.start()  # returns once the TLS port listens; the loopback one opens with it
        deadline = time.monotonic() + (10 if self.has_local else 0)
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.local_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.broker.stop()

    def log(self) -> str:
        return self.broker.log.read_text(errors="replace") if self.broker.log.exists() else ""

    def __enter__(self) -> "SecureBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def try_connect(port: int, name=None, password=None, ca=None, timeout: float = 5.0) -> str:
    """Connect once; return 'Success' or the broker's/transport's refusal as text."""
    c = client(name, password, ca)
    done = threading.Event()
    result: list[str] = []

    def on_connect(_c, _u, _f, reason, _p):
        result.append(str(reason))
        done.set()

    c.on_connect = on_connect
    try:
        c.connect("127.0.0.1", port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return f"transport error: {exc}"
    c.loop_start()
    try:
        if not done.wait(timeout):
            return "no CONNACK"
        return result[0]
    finally:
        c.disconnect()
        c.loop_stop()


class Recorder:
    """A connected subscriber that stores (topic, payload bytes, arrival time) per message."""

    def __init__(self, port: int, topics, name=None, password=None, ca=None, client_id=None, clean=True):
        self.messages: list[tuple[str, bytes, float]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = client(name, password, ca, client_id=client_id, clean=clean)
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("subscriber got no SUBACK")

    def _on_message(self, _c, _u, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, time.time()))

    def topics_seen(self) -> list[str]:
        with self.lock:
            return [t for t, _, _ in self.messages]

    def wait_for(self, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < n:
            time.sleep(0.05)
        return len(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def publish_all(port: int, name: str, password: str, ca, items, qos: int = 1, timeout: float = 10.0) -> list[int]:
    """Publish (topic, payload) pairs and wait for each PUBACK; return paho's result codes."""
    c = client(name, password, ca)
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(timeout)
        return [info.rc for info in infos]
    finally:
        c.disconnect()
        c.loop_stop()
