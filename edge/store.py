"""The box's bundle store: one folder per installed bundle, named by its manifest sha256,
and one small state file saying which is current.

    <store>/<manifest sha256>/   an installed bundle (unpacked, signature verified)
    <store>/state.json           {"current": sha, "history": [previous shas, newest first],
                                  "seen": [pack sha256s taken from the drop folder]}
    <store>/inbox/               packs and rollback requests from `leukedge install`
    <store>/incoming/            MQTT transfers being reassembled
    <store>/.tmp-*               an unpack in progress (removed at the next start)

The state file is replaced with write, fsync, rename, fsync of the folder: a kill -9 or
a power cut at any instant leaves the old state or the new one, never a torn file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

STATE = "state.json"
SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_SEEN = 64


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` so that readers see the old bytes or the new ones, even after a power cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, root: Path, keep: int = 3):
        self.root, self.keep = Path(root), keep
        self.inbox, self.incoming = self.root / "inbox", self.root / "incoming"
        for d in (self.root, self.inbox, self.incoming):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for stale in self.root.glob(".tmp-*"):  # an unpack cut short by a kill or power cut
            shutil.rmtree(stale, ignore_errors=True)

    def path(self, sha: str) -> Path:
        return self.root / sha

    def state(self) -> dict:
        path = self.root / STATE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {"current": None, "history": [], "seen": []}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): treated as empty", path, exc)
            return {"current": None, "history": [], "seen": []}
        ok = isinstance(data, dict) and (data.get("current") is None or SHA.match(str(data.get("current"))))
        if not ok:
            log.warning("%s malformed: treated as empty", path)
            return {"current": None, "history": [], "seen": []}
        return {"current": data.get("current"), "history": [h for h in data.get("history", []) if SHA.match(str(h))],
                "seen": [s for s in data.get("seen", []) if SHA.match(str(s))]}

    def _write(self, state: dict) -> None:
        atomic_write(self.root / STATE, (json.dumps(state, indent=1) + "\n").encode())

    def record(self, sha: str, previous: str | None, rollback: bool = False, drop: tuple | list = ()) -> dict:
        """Make `sha` current. An install pushes `previous` onto the history; a rollback pops it.
        `drop`: bundles found unusable, taken out of the history in the same atomic write."""
        with self._lock:
            st = self.state()
            history = [h for h in st["history"] if h != sha and h not in drop]
            if not rollback and previous and previous != sha:
                history.insert(0, previous)
            st.update(current=sha, history=history[: self.keep])
            self._write(st)
        return st

    def previous(self) -> str | None:
        history = self.state()["history"]
        return history[0] if history else None

    def mark_seen(self, pack_sha: str) -> None:
        with self._lock:
            st = self.state()
            st["seen"] = [pack_sha, *[s for s in st["seen"] if s != pack_sha]][:MAX_SEEN]
            self._write(st)

    def seen(self, pack_sha: str) -> bool:
        return pack_sha in self.state()["seen"]

    def prune(self, st: dict | None = None, protect: tuple[str, ...] = ()) -> list[str]:
        """Remove bundle folders beyond `keep` (the current one and the newest history first)."""
        st = st or self.state()
        wanted = [s for s in [st["current"], *st["history"]] if s][: self.keep]
        removed = []
        for d in self.root.iterdir():
            if d.is_dir() and SHA.match(d.name) and d.name not in wanted and d.name not in protect:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        if removed:
            log.info("store %s: removed %d old bundle(s), keeping %d", self.root, len(removed), self.keep)
        return removed
