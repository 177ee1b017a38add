"""Keep a source alive: reopen after end of stream (live or --loop), an unplug or a stall, with backoff.

Only a finite source (a video file or folder without loop) ever ends the run. While a
source is down, `read()` returns None after a short sleep so the agent keeps
publishing its backlog and stats. A finite source that breaks before its end (a video
corrupt part-way) is counted and logged as a failure; without loop it ends the run with
`broken` set, so the agent can report it instead of passing it off as a clean end.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from edge.sources.base import Frame, Source, SourceBroken, SourceError, SourceLost
from edge.sources.pace import MAX, describe, frame_rate, parse_fps

log = logging.getLogger(__name__)
END = object()  # returned once a finite source has ended


class Watchdog:
    def __init__(self, factory: Callable[[], Source], loop: bool = False, fps: float | str | None = None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0, clock=time.monotonic):
        """`fps`: frames/s for files and folders, "auto" (the file's own rate: edge/sources/pace.py),
        or None / "max" (unpaced). A camera or stream is never paced."""
        self.factory, self.loop, self.clock = factory, loop, clock
        self.fps_setting = MAX if fps is None else parse_fps(fps)
        self.period = 0.0  # seconds between frames, set from the source each time it opens
        self.pace = ""  # how the source plays, in words (logged when it changes, shown by --check)
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.backoff = backoff_initial_s
        self.src: Source | None = None
        self.live = False
        self.opens = self.reopens = self.eofs = self.failures = 0
        self.last_error: str | None = None
        self.broken: str | None = None  # why a finite source ended before its end
        self._next_try = 0.0
        self._next_frame = 0.0
        self.min_side = 0  # how small a source may decode a large image (set_min_side)

    def set_min_side(self, min_side: int) -> None:
        """How small the source may decode a large image file (edge.pixels.frame_min_side): set at
        start and again when a new bundle's input size changes it; the next reopen keeps it."""
        self.min_side = min_side
        if hasattr(self.src, "min_side"):
            self.src.min_side = min_side

    def open(self) -> "Watchdog":
        """First open: a finite source that cannot open is a usage error (raised); a live one is retried."""
        src = self.factory()
        self.live = src.live
        try:
            self.src = src.open()
            self.opens += 1
        except SourceError as exc:
            if not (src.live or self.loop):
                raise
            self._lost(str(exc))
            return self
        self._set_pace()
        return self

    def _set_pace(self) -> None:
        fps, why = frame_rate(self.fps_setting, self.src, self.loop)
        self.period = 1.0 / fps if fps else 0.0
        pace = describe(fps, why)
        if pace != self.pace:
            log.info("source %s plays %s", self.src.uri, pace)
            self.pace = pace

    @property
    def state(self) -> str:
        return "open" if self.src is not None else "reopening"

    def stats(self) -> dict:
        """The source's figures for the stats message."""
        return {"state": self.state, "reopens": self.reopens, "eofs": self.eofs, "failures": self.failures,
                "last_error": self.last_error}

    def read(self) -> Frame | None | object:
        """A Frame, None (nothing this time: keep serving the loop) or END."""
        if self.src is None and not self._reopen():
            return None
        if not self._due():
            return None
        try:
            frame = self.src.read()
        except SourceLost as exc:
            self._lost(str(exc))
            return None
        except SourceBroken as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("source: %s%s", exc, "; replaying it from the start" if self.loop else "")
            if not self.loop:
                self.broken = str(exc)
                return END
            frame = None
        if frame is None:
            self.eofs += 1
            if not (self.live or self.loop):
                return END
            self.src.close()
            self.src = None
            self._next_try = self.clock() if self.loop and not self.live else self.clock() + self.backoff
            return None
        self.backoff = self.backoff_initial_s
        return frame

    def close(self) -> None:
        if self.src is not None:
            self.src.close()
            self.src = None

    def _due(self) -> bool:
        """Whether the next frame is due. Waits at most 50 ms, so a slow pace never holds up the
        agent's loop (broker, commands, stats, a stop signal); a late frame is not made up for."""
        if not self.period:
            return True
        now = self.clock()
        wait = self._next_frame - now
        if wait > 0.05:
            time.sleep(0.05)
            return False
        if wait > 0:
            time.sleep(wait)
            now = self.clock()
        self._next_frame = max(now, self._next_frame) + self.period
        return True

    def _reopen(self) -> bool:
        wait = self._next_try - self.clock()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            return False
        try:
            self.src = self.factory().open()
        except SourceError as exc:
            self._lost(str(exc))
            return False
        self.opens += 1
        self.reopens += 1
        self._set_pace()
        if self.last_error is not None:  # back after a failure (a looped file's rewind is routine)
            log.info("source %s reopened (reopen #%d)", self.src.uri, self.reopens)
            self.last_error = None
        return True

    def _lost(self, why: str) -> None:
        self.failures += 1
        if why != self.last_error:
            log.warning("source: %s; retrying in %.1f s (backoff up to %.0f s)", why, self.backoff, self.backoff_max_s)
        self.last_error = why
        if self.src is not None:
            self.src.close()
            self.src = None
        self._next_try = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, self.backoff_max_s)
