"""The agent's side of the station: hooks for the loop, commands from the page, health, systemd.

The loop calls `on_frame`, `on_message` and `tick`; the server thread calls `submit`,
`fresh`, `wait_newer`, `healthy`, `ready` and `frame_jpeg`. They meet in three places
only: a deque of commands (the loop applies them through the `command` callback, the
same code path as MQTT commands), a finished snapshot dict swapped in under a condition,
and the reference to the latest accepted field. The station never holds the agent: it is
given that callback and `view`, which lends it what one snapshot reads (StationView).
With `ui.listen: off` there is no server and `tick` only pings systemd's watchdog.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import numpy as np

from edge.station.notify import Notifier
from edge.station.state import StationState, StationView

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_S = 0.25  # at most this often while something changed and someone watches
IDLE_SNAPSHOT_EVERY_S = 1.0  # and this often when nothing happened (camera, MQTT, backlog)
WANTED_FOR_S = 5.0  # a poll or a scrape keeps snapshots coming this long
THUMB_EVERY_S = 0.25  # JPEG thumbnails: at most 4 a second, only when asked for
THUMB_SIDE = 480
STOPPING_WAIT_S = 1.0  # at shutdown, for the page's streams to send their `stopping` event


class Station:
    def __init__(self, ui, info: dict, model_file=None, notifier: Notifier | None = None,
                 command: Callable[[object], None] | None = None, view: Callable[[], StationView] | None = None):
        self.cfg = ui
        self.command, self.view = command, view  # the loop's: apply a command; lend a snapshot's readings
        self.notifier = notifier or Notifier()
        self.alive_s = ui.alive_s
        page = {"listen": ui.listen, "tls": ui.cert_file is not None, "lan": bool(ui.listen) and not ui.loopback}
        self.state = StationState(info, model_file, page) if ui.listen else None
        self.commands: collections.deque = collections.deque()
        self.server = self.metrics = None
        self.snap: dict | None = None
        self.invoke: tuple[list[int], float] | None = None  # the invoke histogram, copied with each snapshot
        self.snap_t = self.wanted_until = 0.0
        self.version = 0
        self.watchers = 0
        self.closing = False
        self.dirty = True
        self.last_tick = time.monotonic()
        self.cond = threading.Condition()
        self._jpeg_lock = threading.Lock()
        self._jpeg: tuple[int, float, bytes] | None = None  # (frame version, time, bytes)

    @classmethod
    def start(cls, cfg, info: dict, command: Callable[[object], None], view: Callable[[], StationView]) -> "Station":
        """After the model is loaded: the page (when `ui.listen`), then READY=1 to systemd.

        `info` is the agent's info message; `command` applies a validated command in the loop;
        `view` returns what a snapshot reads (called in the loop thread, by `tick`)."""
        station = cls(cfg.ui, info, cfg.outbox.path.with_suffix(".model.json"), command=command, view=view)
        if cfg.ui.listen:
            from edge.station.metrics import StationMetrics
            from edge.station.server import serve

            station.metrics = StationMetrics(station)
            station.server = serve(station, cfg.ui)
            if station.server is None:  # the port was busy: no page, so nothing to keep for it
                station.state = station.metrics = None
        station.notifier.ready(f"classifying with {info['backend']}")
        return station

    @property
    def url(self) -> str | None:
        return self.server.url if self.server else None

    # ------------------------------------------------------------------ loop thread

    def on_frame(self, rgb, verdict) -> None:
        if self.state is not None:
            self.state.on_frame(rgb, verdict)

    def on_message(self, kind: str, payload: dict) -> None:
        if self.state is not None:
            self.state.on_message(kind, payload)
            self.dirty = True

    def tick(self) -> None:
        """Between frames: watchdog ping, the page's commands, a new snapshot when someone watches."""
        now = self.last_tick = time.monotonic()
        self.notifier.ping()
        if self.state is None:
            return
        while self.commands:
            self.command(self.commands.popleft())
            self.dirty = True
        if not (self.watchers or now < self.wanted_until):
            return
        if now - self.snap_t >= (SNAPSHOT_EVERY_S if self.dirty else IDLE_SNAPSHOT_EVERY_S):
            snap, invoke = self.state.snapshot(self.view()), self.state.invoke.copy()
            self.dirty = False
            with self.cond:
                self.snap, self.invoke, self.snap_t = snap, invoke, now
                self.version += 1
                self.cond.notify_all()

    def stop(self) -> None:
        """Tell systemd and the page's streams (their last event is `stopping`: the page shows
        NOT LIVE at once), give the streams a moment to send it, then close the server."""
        self.notifier.stopping()
        with self.cond:
            self.closing = True
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.watchers == 0, STOPPING_WAIT_S)
        if self.server is not None:
            self.server.stop()

    # ------------------------------------------------------------------ server threads

    def submit(self, cmd) -> None:
        """A validated command (edge.commands.parse) from the page, applied by the loop at its next tick."""
        self.commands.append(cmd)
        self.wanted_until = time.monotonic() + WANTED_FOR_S

    def fresh(self, max_age_s: float = 0.5, timeout_s: float = 1.0) -> dict | None:
        """A snapshot at most max_age_s old, waiting up to timeout_s for the loop; else the last one."""
        asked = time.monotonic()
        self.wanted_until = asked + WANTED_FOR_S
        with self.cond:
            self.cond.wait_for(lambda: self.closing or self.snap_t >= asked - max_age_s, timeout_s)
            return self.snap

    def wait_newer(self, version: int, timeout_s: float) -> tuple[dict | None, int]:
        """(snapshot, its version) once one newer than `version` exists; (None, version) on timeout."""
        with self.cond:
            self.cond.wait_for(lambda: self.closing or self.version > version, timeout_s)
            if self.version > version and self.snap is not None:
                return self.snap, self.version
            return None, version

    def watch(self, delta: int) -> None:
        with self.cond:
            self.watchers += delta
            self.cond.notify_all()  # stop() waits for the streams to say `stopping`

    def healthy(self) -> tuple[bool, float]:
        age = time.monotonic() - self.last_tick
        return age < self.alive_s and not self.closing, age

    def ready(self) -> bool:
        """The model is loaded (this object exists after that) and the source delivered a frame."""
        return self.state is not None and self.state.first_frame_t is not None and not self.closing

    def frame_jpeg(self) -> bytes | None:
        """The latest accepted field as a JPEG thumbnail, encoded here at most 4 times a second."""
        st = self.state
        with self._jpeg_lock:
            version, frame = st.frame_version, st.frame
            cached = self._jpeg
            if cached and (cached[0] == version or time.monotonic() - cached[1] < THUMB_EVERY_S):
                return cached[2]
            if frame is None:
                return None
            import cv2

            h, w = frame.shape[:2]
            scale = min(1.0, THUMB_SIDE / max(h, w))
            small = cv2.resize(np.ascontiguousarray(frame), (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
            if not ok:
                return None
            self._jpeg = (version, time.monotonic(), buf.tobytes())
            return self._jpeg[2]
