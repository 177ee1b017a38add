"""Counters and latency windows for the periodic `stats` message."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np

# per classified field: total = decode .. publish; overhead = total - invoke
STAGES = ("decode", "gate", "pre", "invoke", "outbox", "publish", "total", "overhead")


class Stats:
    def __init__(self, window: int = 1000):
        self.stages = {name: collections.deque(maxlen=window) for name in STAGES}
        self.frames = self.fields = 0
        self.bad: collections.Counter[str] = collections.Counter()
        self.started = self._last_t = time.monotonic()
        self._last_frames = 0

    def time(self, stage: str, ms: float) -> None:
        self.stages[stage].append(ms)

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


def cpu_temperature() -> float | None:
    """SoC temperature in degrees C where the kernel exposes it (Raspberry Pi, Jetson), else None."""
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        try:
            return round(int(zone.read_text()) / 1000, 1)
        except (OSError, ValueError):
            continue
    return None
