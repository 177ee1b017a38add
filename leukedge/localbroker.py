"""A local Mosquitto broker process on a free 127.0.0.1 port, for the demo and the tests.

Where the `mosquitto` binary is missing, `mosquitto_available()` is False and tests skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def mosquitto_available() -> bool:
    return find_mosquitto() is not None


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Start/stop/restart a mosquitto process with a generated config in `workdir`."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "", listener: str | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        listener = listener or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(f"{listener}persistence false\n{extra_conf}")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Broker":
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto binary not found")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf)], stdout=open(self.log, "ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
