"""Counters and latency windows for the periodic `stats` message.

Latency stages of a classified field, in ms:
    decode    capture or decode (measured by the source)
    gate      frame check + field gate
    pre       crop, resize, colour order
    invoke    the model
    guard     the unfamiliar-input guard's verdict (edge/ood.py), when the bundle has one
    total     from the frame check to the model's answer (gate + pre + invoke): the same
              number a result message carries as `latency_ms.total`
    outbox    writing a message to the outbox (and the local log)
    publish   handing queued rows to MQTT
    overhead  decode .. published, minus invoke: what the agent adds to the model
"""

from __future__ import annotations

import collections
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

STAGES = ("decode", "gate", "pre", "invoke", "guard", "outbox", "publish", "total", "overhead")


class Stats:
    def __init__(self, window: int = 1000):
        self.stages = {name: collections.deque(maxlen=window) for name in STAGES}
        self.last: dict[str, float] = {}  # each stage's latest ms, for the result message
        self.frames = self.fields = 0
        self.unfamiliar = 0  # classified fields the guard called unfamiliar (referred, never pooled)
        self.bad: collections.Counter[str] = collections.Counter()
        self.started = self._last_t = time.monotonic()
        self._last_frames = 0

    def time(self, stage: str, ms: float) -> None:
        self.stages[stage].append(ms)
        self.last[stage] = ms

    @contextmanager
    def stage(self, name: str):
        """Time the block as `name`; a block left by an exception is not counted (a bad frame
        is not a gate time)."""
        t0 = time.perf_counter()
        yield
        self.time(name, (time.perf_counter() - t0) * 1e3)

    def percentiles(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in self.stages.items():
            if values:
                p50, p95 = np.percentile(np.fromiter(values, float), [50, 95])
                out[name] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}
        return out

    def fps(self) -> float:
        """Frames per second since the previous call."""
        now = time.monotonic()
        fps = (self.frames - self._last_frames) / max(now - self._last_t, 1e-6)
        self._last_t, self._last_frames = now, self.frames
        return round(fps, 2)

    def unfamiliar_counts(self) -> dict[str, float]:
        """The `unfamiliar` part of the stats message: how many fields the guard referred, and their share."""
        return {"fields": self.unfamiliar, "rate": round(self.unfamiliar / self.fields, 4) if self.fields else 0.0}

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def frame_counts(self) -> dict[str, int]:
        """The `frames` part of the stats message: frames read, and the bad ones by reason."""
        return {"total": self.frames, "bad": sum(self.bad.values()), **{f"bad_{k}": v for k, v in self.bad.items()}}


def cpu_temperature() -> float | None:
    """SoC temperature in degrees C where the kernel exposes it (Raspberry Pi, Jetson), else None."""
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        try:
            return round(int(zone.read_text()) / 1000, 1)
        except (OSError, ValueError):
            continue
    return None
