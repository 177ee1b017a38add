"""A log line that may repeat thousands of times (a camera sending bad frames) kept readable.

The first `burst` lines are logged in full; after that at most one per `every_s` seconds,
saying how many were held back since the last one. Counting is the caller's business
(`stats` counts every event), so nothing is lost but repetition.
"""

from __future__ import annotations

import logging
import time


class LimitedLog:
    def __init__(self, logger: logging.Logger, burst: int = 10, every_s: float = 30.0, clock=time.monotonic,
                 counted_in: str = "stats"):
        self.logger, self.burst, self.every_s, self.clock = logger, burst, every_s, clock
        self.counted_in = counted_in
        self.logged = self.held = 0
        self._next = 0.0

    def warning(self, msg: str, *args) -> None:
        now = self.clock()
        if self.logged < self.burst:
            self.logged += 1
            if self.logged == self.burst:
                msg += f" (more of these: one line per {self.every_s:g} s; all are counted in {self.counted_in})"
            self._next = now + self.every_s
        elif now >= self._next:
            self.logged += 1
            msg += f" ({self.held} more since the last such line)"
            self.held, self._next = 0, now + self.every_s
        else:
            self.held += 1
            return
        self.logger.warning(msg, *args)
