"""The edge agent as a real process on a replay folder, and a lab-side feed of what it publishes.

Shared by the tests (faults, bad input, security, the station) and the benchmarks (soak,
over-the-air update), so a benchmark runs the agent exactly as the tests do: a config
writer, a process handle with kill -9 / SIGTERM, a replay image folder, the results log
read back, and a subscriber that turns what arrives into figures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml

from edge.messages import DEFAULT_PREFIX, topic

ROOT = Path(__file__).resolve().parents[1]  # the agent process starts here, so it imports this checkout
CLI = "import sys; from leukedge.cli import main; sys.exit(main())"


def write_images(folder: Path, n: int = 24, size: int = 96, seed: int = 0) -> Path:
    """A replay folder of n distinct JPEG fields (random colour noise is enough for a gate in
    continuous mode and gives every frame its own sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"field-{i:04d}.jpg"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return folder


def agent_config(workdir: Path, bundle: Path, src: Path | str, mqtt_url: str | None = None,
                 device_id: str = "devA", **over) -> dict:
    """A config for a replay run: every frame is a field (continuous gate), unpaced (`fps: max`;
    a test that wants a camera's pace sets a rate), fast stats, quick reconnects; `over` is
    merged one level deep (e.g. mqtt={...}, outbox={...})."""
    cfg = {
        "device_id": device_id,
        "bundle": str(bundle),
        "backend": {"name": "litert"},
        "source": {"uri": str(src), "loop": True, "fps": "max", "watchdog": {"backoff_initial_s": 0.2, "backoff_max_s": 2.0}},
        "gate": {"mode": "continuous"},
        "sample": {"fields_per_sample": 25},
        "mqtt": {"url": mqtt_url or "off", "reconnect_min_s": 0.5, "reconnect_max_s": 2.0, "stats_interval_s": 1.0,
                 "keepalive_s": 5},
        "outbox": {"path": str(workdir / "outbox.sqlite")},
        "result_log": {"path": str(workdir / "results.jsonl")},
        "drain_timeout_s": 10.0,
        "ui": {"listen": "off"},  # a test that wants the page binds port 0
    }
    for key, value in over.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


class AgentProcess:
    """`leukedge agent --config` in its own process, output to workdir/agent.log."""

    def __init__(self, workdir: Path, config: dict, name: str = "agent"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> "AgentProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", CLI, "agent", "--config", str(self.config_path), *extra],
                                     cwd=ROOT, env=env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (the agent flushes and says offline); kill -9 if it overstays."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def page_url(self, timeout: float = 120) -> str:
        """The station page's URL from the agent's log line (tests bind port 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"station page at (\S+)", self.log())
            if m:
                return m.group(1)
            if not self.alive():
                raise RuntimeError(f"agent exited before its page came up:\n{self.log()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"no station page within {timeout} s:\n{self.log()[-2000:]}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def log_files(results_log: Path) -> list[Path]:
    """The results log and its rotations, oldest first (results.jsonl.2, .1, results.jsonl)."""
    rotated = sorted(results_log.parent.glob(results_log.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return rotated + ([results_log] if results_log.exists() else [])


def logged(results_log: Path, kind: str = "result") -> list[dict]:
    """Messages of one kind the agent wrote (outbox first, then this log), in order."""
    out = []
    for path in log_files(results_log):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by kill -9
                continue
            if rec.get("type") == kind:
                out.append(rec)
    return out


def iso_ts(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def client(name: str | None, password: str | None, ca: Path | None, client_id: str | None = None,
           clean: bool = True) -> mqtt.Client:
    """A paho client (MQTT 3.1.1), with credentials and TLS when given; not yet connected."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{name}-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv311, clean_session=clean)
    if name is not None:
        c.username_pw_set(name, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    return c



class ResultFeed:
    """A lab-side subscriber with a persistent session: every `result` with its arrival time."""

    def __init__(self, port: int, device: str = "devA", client_id: str = "lab-feed", username=None,
                 password=None, ca=None, extra_topics=()):
        self.results: list[tuple[dict, float]] = []
        self.other: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic(DEFAULT_PREFIX, device, "result")
        self.c = client(username, password, ca, client_id=client_id, clean=False)
        self.c.reconnect_delay_set(0.1, 0.5)
        topics = [(self.topic, 1), *[(t, 1) for t in extra_topics]]
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topics)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("feed got no SUBACK")

    def _on_message(self, _c, _u, msg):
        now = time.time()
        with self.lock:
            if msg.topic == self.topic:
                self.results.append((json.loads(msg.payload), now))
            else:
                self.other.append((msg.topic, msg.payload))

    def ids(self) -> list[str]:
        with self.lock:
            return [r["id"] for r, _ in self.results]

    def wait_for(self, wanted: set[str], timeout: float) -> set[str]:
        """Wait until every id in `wanted` arrived; return those still missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = wanted - set(self.ids())
            if not missing:
                return missing
            time.sleep(0.1)
        return wanted - set(self.ids())

    def stats(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p in self.other if t.endswith("/stats")]

    def wait_stats(self, predicate, timeout: float) -> dict | None:
        """The latest `stats` message for which predicate(stats) holds, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in reversed(self.stats()):
                if predicate(s):
                    return s
            time.sleep(0.1)
        return None

    def figures(self, sent: list[str]) -> dict:
        """sent / delivered / duplicates / max delay, and whether first arrivals kept the sent order."""
        with self.lock:
            arrivals = list(self.results)
        seen: dict[str, float] = {}
        order: list[str] = []
        for msg, t in arrivals:
            if msg["id"] not in seen:
                seen[msg["id"]] = t - iso_ts(msg["ts"])
                order.append(msg["id"])
        rank = {i: k for k, i in enumerate(sent)}
        delivered_sent = [i for i in order if i in rank]
        return {
            "sent": len(sent),
            "delivered": len(set(sent) & set(seen)),
            "duplicates": len(arrivals) - len(seen),
            "max_delay_s": round(max((seen[i] for i in sent if i in seen), default=0.0), 2),
            "in_order": all(rank[a] < rank[b] for a, b in zip(delivered_sent, delivered_sent[1:])),
            "missing": [i for i in sent if i not in seen][:10],
        }

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
