"""Two checks in front of the page: the Host header (DNS rebinding) and password guessing.

Host: a web page on evil.example whose name is made to resolve to 127.0.0.1 makes the
victim's browser talk to this box as `Host: evil.example`, same-origin for the browser,
so it could read the page, its CSRF token and the state. Only names this box answers to
are accepted: loopback names, any IP literal (a browser sends one only when the user typed
that address), this box's host name, and `ui.allowed_hosts` for the LAN.

Passwords: after FREE_FAILURES wrong passwords a client (by IP address) is refused for a
time that doubles with each further wrong one (up to MAX_LOCK_S) without its password
being checked; one log line per burst, every failure counted for `/metrics`.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import socket
import threading
import time

log = logging.getLogger("edge.station.server")

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
FREE_FAILURES = 5  # a technician mistyping a few times is never slowed down
MAX_LOCK_S = 300.0
FORGET_AFTER_S = 900.0  # a client quiet this long starts afresh
MAX_CLIENTS = 4096  # clients remembered; beyond: the longest quiet is forgotten


def host_names(allowed: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The names accepted in a Host header (lower case, no port)."""
    own = socket.gethostname().lower()
    return frozenset({*LOOPBACK_NAMES, own, own.split(".")[0] + ".local", *(h.lower() for h in allowed)})


def host_ok(header: str | None, names: frozenset[str]) -> bool:
    """True for a Host header naming this box; a missing one (HTTP/1.0, a probe) carries no name to trust."""
    if header is None:
        return True
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if host in names:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class AuthBackoff:
    """Wrong passwords per client address; `locked(ip)` says for how many seconds more it is refused."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.clients: collections.OrderedDict[str, list[float]] = collections.OrderedDict()  # ip -> [fails, until, last]
        self.failures = 0  # all wrong passwords, for /metrics
        self.lockouts = 0

    def locked(self, ip: str) -> float:
        with self.lock:
            entry = self.clients.get(ip)
            return max(0.0, entry[1] - self.clock()) if entry else 0.0

    def failed(self, ip: str) -> float:
        """Count one wrong password; the lock it starts (0 while under FREE_FAILURES)."""
        now = self.clock()
        with self.lock:
            self.failures += 1
            entry = self.clients.pop(ip, None)
            if entry is None or now - entry[2] > FORGET_AFTER_S:
                entry = [0, 0.0, now]
            entry[0] += 1
            entry[2] = now
            wait = 0.0
            if entry[0] > FREE_FAILURES:
                wait = min(MAX_LOCK_S, 2.0 ** (entry[0] - FREE_FAILURES - 1))
                entry[1] = now + wait
                self.lockouts += 1
            self.clients[ip] = entry
            while len(self.clients) > MAX_CLIENTS:
                self.clients.popitem(last=False)
            first_lock = entry[0] == FREE_FAILURES + 1
        if first_lock:  # one line per burst: the burst ends when the client succeeds or goes quiet
            log.warning("station page: %d wrong passwords from %s; it is refused for a time that doubles with "
                        "each further wrong one (up to %g s); all are counted in /metrics "
                        "(leukedge_ui_auth_failures_total)", entry[0], ip, MAX_LOCK_S)
        return wait

    def succeeded(self, ip: str) -> None:
        with self.lock:
            self.clients.pop(ip, None)
