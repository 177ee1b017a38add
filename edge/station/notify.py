"""systemd's notify protocol: `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...`.

A datagram of `KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path,
or an abstract name written with a leading `@`). Eight lines of stdlib instead of a
dependency; without `$NOTIFY_SOCKET` (not under systemd, or `Type=exec`) every call is a
no-op. With `WatchdogSec=` systemd sets `$WATCHDOG_USEC`; the agent's loop pings at a
third of it, so a hung loop (no ping) is killed and restarted by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env=None, clock=time.monotonic):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self.clock = clock
        self.watchdog_s = None  # ping period, when systemd watches this process
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if self.address and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6 / 3
        self._next_ping = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """One datagram; False (logged once) when the socket is gone, never an exception."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall("\n".join(lines).encode())
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notify socket %s: %s", self.address.replace("\0", "@"), exc)
            self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def ping(self) -> bool:
        """WATCHDOG=1 from the loop, at most once per period (a clock read otherwise)."""
        if self.watchdog_s is None:
            return False
        now = self.clock()
        if now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_s
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
