"""MQTT over paho-mqtt 2.x, fed from the outbox.

The network runs in paho's own thread; this object is driven from the agent's loop
through `pump()`, which deletes acknowledged rows and hands the next pending ones to
paho, at most `inflight` at a time (paho itself re-sends unacknowledged QoS 1 messages
after a reconnect, so nothing handed over is lost or sent twice by us). Callbacks only
append to thread-safe deques: SQLite is touched by the agent's thread alone.

On every (re)connect: retained `online` on `status`, retained `info`, subscribe to
`cmd/#`; with `mqtt.homeassistant`, the retained Home Assistant discovery configs
(edge.homeassistant). The Last Will is a retained `offline`. Commands carrying the retain flag are
ignored: under MQTT 5 (the default) the subscription asks for Retain As Published, so a
retained command is recognised live as well as on subscribing; MQTT 3.1.1 clears the flag
on live delivery and cannot tell. With MQTT off the agent talks to `Offline` instead,
which has the same face and sends nothing.

An exception escaping a callback would end paho's network thread, and with it delivery,
silently. So every callback runs under `_guarded` (one rate-limited log line, counted in
`stats` as `handler_errors`), and `pump()` still checks that the thread lives: a dead one
means state down (`connected` false, `last_error` says why), a warning, and a fresh
connection on a new thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from urllib.parse import urlsplit

from edge.commands import BadCommand, Command, parse
from edge.errors import BadInput
from edge.homeassistant import discovery_configs
from edge.loglimit import LimitedLog
from edge.messages import ALL_COMMANDS, INFO, STATUS, command_leaf, encode, topic

log = logging.getLogger(__name__)


class _Link:
    """What the agent's loop asks of its MQTT side, and the figures it reports in `stats`."""

    def __init__(self, cfg, device_id: str):
        self.cfg, self.device_id = cfg, device_id
        self.connected = threading.Event()
        self.commands: collections.deque[Command] = collections.deque()
        self.acked = self.handed = self.rejected = self.connects = 0
        self.cmd_ok = self.cmd_bad = self.cmd_retained = 0
        self.handler_errors = self.restarts = 0
        self.last_error: str | None = None
        self.chunk_limit = 0  # update.max_bytes when the box takes bundle updates (edge.commands.parse)

    def topic(self, name: str) -> str:
        return topic(self.cfg.prefix, self.device_id, name)

    @property
    def inflight(self) -> int:
        return 0

    def stats(self) -> dict:
        """The `mqtt` part of the stats message."""
        return {"connected": self.connected.is_set(), "connects": self.connects, "acked": self.acked,
                "rejected": self.rejected, "commands": self.cmd_ok, "commands_bad": self.cmd_bad,
                "commands_retained_ignored": self.cmd_retained, "handler_errors": self.handler_errors,
                "network_restarts": self.restarts, "last_error": self.last_error}


class Offline(_Link):
    """MQTT off: rows stay in the outbox (sent by a later run that has a broker), stats are only logged."""

    def set_info(self, info: dict) -> None:
        """No broker to tell."""

    def start(self) -> "Offline":
        return self

    def pump(self, flush: bool = False) -> None:
        """Nothing is handed over while offline."""

    def publish_now(self, name: str, payload: dict, retain: bool = False) -> None:
        """Stats are not queued (see Publisher.publish_now)."""

    def drained(self) -> bool:
        return True  # nothing to wait for at shutdown

    def stop(self) -> None:
        """No connection to close."""


class Publisher(_Link):
    def __init__(self, cfg, device_id: str, outbox, client_id: str | None = None):
        super().__init__(cfg, device_id)
        self.outbox = outbox
        self.client_id = client_id or cfg.client_id or f"leukedge-{device_id}"
        self._acks: collections.deque[tuple[int, bool]] = collections.deque()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._cursor = 0  # highest row id handed to paho
        self._done: list[int] = []  # acknowledged rows not yet deleted
        self._last_delete = time.monotonic()
        self.info: dict | None = None
        self._stopping = False
        self._rejected_log = LimitedLog(log)
        self._fault_log = LimitedLog(log, burst=3)
        self._network: threading.Thread | None = None
        self.client = self._make_client()

    # ------------------------------------------------------------------ setup

    def _make_client(self):
        import paho.mqtt.client as mqtt

        cfg = self.cfg
        u = urlsplit(cfg.url)
        tls = u.scheme in ("mqtts", "ssl")  # the `tls` section only supplies files
        self.host, self.port = u.hostname, u.port or (8883 if tls else 1883)
        proto = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=proto)
        username = cfg.username or u.username
        if username:
            c.username_pw_set(username, cfg.secret() or u.password)
        if tls:
            t = cfg.tls

            def path(p):
                return str(p) if p else None

            try:
                c.tls_set(ca_certs=path(t.ca_file), certfile=path(t.cert_file), keyfile=path(t.key_file))
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a file that is not PEM, a key mismatch
                files = ", ".join(f"{k} {v}" for k, v in (("ca_file", t.ca_file), ("cert_file", t.cert_file),
                                                          ("key_file", t.key_file)) if v)
                raise BadInput(f"mqtt.tls ({files or 'system CAs'}): cannot be used ({exc})") from None
            if t.insecure:
                c.tls_insecure_set(True)
        c.will_set(self.topic(STATUS), "offline", qos=1, retain=True)
        c.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        c.max_inflight_messages_set(cfg.inflight)
        c.on_connect, c.on_disconnect = self._guarded(self._on_connect), self._guarded(self._on_disconnect)
        c.on_connect_fail, c.on_publish = self._guarded(self._on_connect_fail), self._guarded(self._on_publish)
        c.on_message = self._guarded(self._on_message)
        return c

    def _guarded(self, handler):
        """`handler` as a paho callback that never raises: whatever it throws is logged (rate-limited),
        counted, and the network thread goes on."""
        name = handler.__name__

        def call(*args, **kwargs):
            try:
                handler(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - one bad message must not end delivery
                self.handler_errors += 1
                self._fault_log.warning("MQTT %s failed, message dropped: %s: %s", name.lstrip("_"),
                                        type(exc).__name__, str(exc)[:200])

        return call

    def start(self) -> "Publisher":
        """Connect in the background; until it succeeds everything waits in the outbox."""
        self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._network = self.client._thread  # paho keeps no public handle on its thread; watched by pump()
        return self

    def _network_alive(self) -> bool:
        """False when paho's network thread ended without stop(): nothing would be sent or received again.
        Then: state down, a warning, and a new connection on a new thread (paho re-sends what it held)."""
        if self._network is None or self._network.is_alive() or self._stopping:
            return True
        self.restarts += 1
        self.connected.clear()
        self._state(f"MQTT network thread to {self.host}:{self.port} stopped unexpectedly; reconnecting")
        log.warning("MQTT network thread stopped unexpectedly (restart %d): reconnecting to %s:%d",
                    self.restarts, self.host, self.port)
        self._network = None
        self.start()
        return False

    # ------------------------------------------------------------------ paho thread

    def _state(self, error: str | None) -> None:
        """Record the connection state; log only when it changes (not at every retry)."""
        if error != self.last_error and error is not None:
            log.error("%s (retrying with backoff up to %g s)", error, self.cfg.reconnect_max_s)
        self.last_error = error

    def _on_connect_fail(self, client, userdata):
        self._state(f"broker {self.host}:{self.port} unreachable (connection failed)")

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            self._state(f"broker {self.host}:{self.port} refused the connection: {reason_code}")
            return
        self.connects += 1
        self._state(None)
        log.info("connected to %s:%d as %s (MQTT %s)", self.host, self.port, self.client_id, self.cfg.protocol)
        client.publish(self.topic(STATUS), "online", qos=1, retain=True)
        if self.info is not None:
            client.publish(self.topic(INFO), encode(self.info), qos=1, retain=True)
        if self.cfg.homeassistant:
            for ha_topic, config in discovery_configs(self.cfg.prefix, self.device_id, self.cfg.homeassistant_prefix).items():
                client.publish(ha_topic, encode(config), qos=1, retain=True)
        if self.cfg.protocol == "5":  # Retain As Published: a live retained command keeps its flag (and is ignored)
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe(self.topic(ALL_COMMANDS), options=SubscribeOptions(qos=1, retainAsPublished=True))
        else:
            client.subscribe(self.topic(ALL_COMMANDS), qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        if self.connected.is_set() and not self._stopping:
            self._state(f"disconnected from {self.host}:{self.port} ({reason_code})")
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties=None):
        self._acks.append((mid, not reason_code.is_failure))

    def _on_message(self, client, userdata, msg):
        if msg.retain:
            self.cmd_retained += 1
            log.info("ignored retained command on %s", msg.topic)
            return
        try:
            self.commands.append(parse(msg.topic.removeprefix(self.topic(command_leaf(""))), msg.payload, self.chunk_limit))
            self.cmd_ok += 1
        except BadCommand as exc:
            self.cmd_bad += 1
            self._rejected_log.warning("command rejected: %s", exc)

    # ------------------------------------------------------------------ agent thread

    def set_info(self, info: dict) -> None:
        self.info = info
        if self.connected.is_set():
            self.client.publish(self.topic(INFO), encode(info), qos=1, retain=True)

    def pump(self, flush: bool = False) -> None:
        """Delete acknowledged rows (in batches: one transaction for many PUBACKs); hand the
        next pending rows to paho while connected."""
        while self._acks:
            mid, ok = self._acks.popleft()
            row = self._inflight.pop(mid, None)
            if row is None:
                continue
            self._done.append(row)
            if not ok:
                self.rejected += 1
                log.warning("broker rejected outbox row %d: dropped", row)
        if not self._network_alive():
            return
        now = time.monotonic()
        if self._done and (flush or len(self._done) >= 64 or now - self._last_delete >= 0.5):
            self.acked += self.outbox.delete(self._done)
            self._done, self._last_delete = [], now
        room = self.cfg.inflight - len(self._inflight)
        if room <= 0 or self._cursor >= self.outbox.last_id or not self.connected.is_set():
            return
        for row in self.outbox.pending(self._cursor, room):
            info = self.client.publish(row.topic, row.payload, qos=1)
            self._inflight[info.mid] = row.id
            self._cursor = row.id
            self.handed += 1

    def publish_now(self, name: str, payload: dict, retain: bool = False) -> None:
        """Best-effort QoS 0 publish (stats): skipped while offline, never queued."""
        if self.connected.is_set():
            self.client.publish(self.topic(name), encode(payload), qos=0, retain=retain)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def drained(self) -> bool:
        self.pump(flush=True)
        return not self._inflight and self.outbox.rows == 0

    def stop(self, timeout: float = 3.0) -> None:
        """Publish the retained `offline` (a clean disconnect sends no Will), then disconnect."""
        self._stopping = True
        self.pump(flush=True)
        if self.connected.is_set():
            info = self.client.publish(self.topic(STATUS), "offline", qos=1, retain=True)
            deadline = time.monotonic() + timeout
            while not info.is_published() and self.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()


def probe(cfg, device_id: str, timeout: float = 5.0) -> str:
    """Try the broker once (for `--check`): "ok" or the one-line reason it failed.

    Uses its own client id, so a running agent with the same device id is not kicked off."""
    pub = Publisher(cfg, device_id, outbox=None, client_id=f"leukedge-{device_id}-check")
    answer: list = []
    done = threading.Event()
    c = pub.client
    c.will_clear()
    c.on_connect = lambda client, userdata, flags, rc, properties=None: (answer.append(rc), done.set())
    try:
        c.connect(pub.host, pub.port, keepalive=10)
    except (OSError, ValueError) as exc:
        return f"cannot reach {pub.host}:{pub.port}: {exc}"
    c.loop_start()
    done.wait(timeout)
    c.disconnect()
    c.loop_stop()
    if not answer:
        return f"no answer from {pub.host}:{pub.port} within {timeout:.0f} s"
    return "ok" if not answer[0].is_failure else f"{pub.host}:{pub.port} refused the connection: {answer[0]}"
