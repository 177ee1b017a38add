"""Over-the-air bundle updates: three ways in (MQTT chunks, the drop folder, `leukedge install`),
one install path, done off the agent's loop:

    size and disk check -> safe unpack into the store -> signature by a trusted key ->
    every sha256 -> release newer than the running one -> load the backend -> self-test

The result is a `Ready` (loaded, tested) that the agent swaps in between two frames,
then `commit` records it as current atomically and returns the `event`; anything that
fails on the way is a `rejected` event with its reason, and the old model keeps running.
Only boxes with `trust.keys` take updates at all.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edge import selftest
from edge.backends import load_for_manifest
from edge.chunks import BadChunk, Reassembler
from edge.errors import BadInput, BundleError
from edge.loglimit import LimitedLog
from edge.manifest import load_manifest, sha256_file
from edge.messages import SCHEMA, utc_now
from edge.pack import safe_unpack
from edge.store import Store, atomic_write
from edge.trust import load_keys, manifest_sha256, verify_signature

log = logging.getLogger(__name__)

PAUSE_ENV = "LEUKEDGE_INSTALL_PAUSE"  # fault injection for tests: "<step>:<seconds>"
FREE_MARGIN = 16 << 20
SCAN_S = 0.5
MAX_JOBS = 512  # queued chunks and rollbacks; more are dropped (a sender re-sends what a transfer status lists)


def event(status: str, sha: str | None, release: int | None, reason: str | None, **extra) -> dict:
    """The `event` message of a bundle install, rejection or rollback (DESIGN.md)."""
    return {"schema": SCHEMA, "type": "bundle", "status": status, "manifest_sha256": sha, "release": release,
            "reason": reason, "ts": utc_now(), **extra}


def _pause(step: str) -> None:
    want = os.environ.get(PAUSE_ENV, "")
    if want.partition(":")[0] == step:
        log.warning("install paused %s s at %s (%s)", want.partition(":")[2], step, PAUSE_ENV)
        time.sleep(float(want.partition(":")[2] or 0))


@dataclass
class Ready:
    """A verified, loaded and self-tested bundle, waiting to be switched to between frames."""

    path: Path
    sha: str
    manifest: object
    backend: object
    entry: object
    signer: str
    status: str  # installed | rolled_back
    origin: str
    event_file: Path | None = None
    pack_sha: str | None = None
    selftest: dict | None = None


class Updater:
    def __init__(self, cfg):
        self.cfg, self.up = cfg, cfg.update
        self.keys = load_keys(cfg.trust.keys)
        self.store = Store(cfg.store, self.up.keep)
        self.reassembler = Reassembler(self.store.incoming, self.up.max_bytes)
        self.jobs: queue.Queue = queue.Queue()
        self.dropped = 0  # jobs refused because the queue was full
        self._queued_bytes = 0  # chunk data waiting in `jobs`: at most update.max_bytes
        self._jobs_lock = threading.Lock()
        self._drop_log = LimitedLog(log)
        self.outcomes: collections.deque = collections.deque()
        self.running: tuple[str | None, int | None] = (None, None)
        self.factory_sha: str | None = None
        self._start_report: tuple = (None, None)  # (sha, self-test report) of the stored bundle checked at start
        self.signer: str | None = None
        self._busy: set[str] = set()
        self._drop_seen: dict[Path, tuple] = {}  # drop folder file -> (path, size, mtime) at the last scan
        self._drop_done: set[tuple] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ start

    def locate(self, sha: str) -> Path:
        return self.cfg.bundle if sha == self.factory_sha else self.store.path(sha)

    def start_bundle(self) -> Path:
        """The bundle to run at start: the store's current one when it is signed, whole and passes its
        self-test; else the previous ones in the store, newest first; else the factory `bundle:`.

        A box is never left broken by its store: a fallback is recorded atomically and announced by an
        `event` (queued for the outbox). The factory bundle must carry a valid signature (BundleError: exit 2)."""
        factory = Path(self.cfg.bundle)
        verify_signature(factory, self.keys)
        self.factory_sha = manifest_sha256(factory)
        st = self.store.state()
        current = st["current"]
        if not current or current == self.factory_sha:
            return factory
        reasons, bad = [], []
        for sha in [current, *st["history"]]:
            if sha == self.factory_sha:
                break
            try:
                self._start_report = (sha, self._check(sha))
            except Exception as exc:  # noqa: BLE001 - any fault in a stored bundle means: fall back
                reasons.append(f"{sha[:12]}: {_reason(exc)}")
                bad.append(sha)
                continue
            if sha == current:
                return self.store.path(sha)
            return self._fell_back(sha, bad, reasons)
        return self._fell_back(self.factory_sha, bad, reasons)

    def _check(self, sha: str) -> dict | None:
        """Signature, every sha256, load and self-test of a stored bundle; its self-test report."""
        path = self.store.path(sha)
        if not path.is_dir():
            raise BundleError(f"bundle folder {path} is missing")
        key = verify_signature(path, self.keys)
        ready = self._load(path, sha, load_manifest(path), key.fingerprint, "rolled_back", "start", None, None)
        ready.backend.close()
        return ready.selftest

    def _fell_back(self, sha: str, bad: list[str], reasons: list[str]) -> Path:
        """Record `sha` as current (the unusable ones leave the history) and queue the `event`."""
        reason = "store's current bundle not usable: " + "; ".join(reasons)
        log.warning("%s; running %s", reason, "the factory bundle" if sha == self.factory_sha else sha[:12])
        self.store.prune(self.store.record(sha, None, rollback=True, drop=bad))
        path = self.locate(sha)
        self.outcomes.append(("event", event("rolled_back", sha, load_manifest(path, verify=False).release,
                                             reason[:300], origin="start", broken_sha256=bad[0],
                                             factory=sha == self.factory_sha)))
        return path

    def started(self, path: Path, manifest, backend, entry) -> dict | None:
        """The agent loaded `path`: self-test it (BundleError when this runtime disagrees), note it as running.
        A stored bundle was already self-tested by `start_bundle`: its report is reused."""
        sha = manifest_sha256(path)
        tested, self._start_report = self._start_report, (None, None)
        if tested[0] == sha:
            report = tested[1]
        else:
            result = selftest.run(path, manifest, entry, backend)
            report = result.to_dict() if result else None
        self.signer = verify_signature(path, self.keys).fingerprint
        self.running = (sha, manifest.release)
        return report

    def start(self) -> "Updater":
        self._thread = threading.Thread(target=self._work, name="leukedge-update", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        while self.outcomes:  # a bundle loaded but never switched to: release its runtime
            kind, item = self.outcomes.popleft()
            if kind == "ready":
                item.backend.close()

    # ------------------------------------------------------------------ agent thread

    def submit_chunk(self, chunk) -> bool:
        return self._submit(("chunk", chunk), len(chunk.data))

    def submit_rollback(self, factory: bool = False, origin: str = "mqtt", event_file: Path | None = None) -> bool:
        return self._submit(("rollback", factory, origin, event_file), 0)

    def _submit(self, job: tuple, size: int) -> bool:
        """Queue a job unless MAX_JOBS wait already, or its chunk data would take the queued bytes over
        update.max_bytes (one chunk is always taken into an empty queue). False, logged and counted, if not."""
        with self._jobs_lock:
            full = self.jobs.qsize() >= MAX_JOBS or (size and self._queued_bytes
                                                     and self._queued_bytes + size > self.up.max_bytes)
            if not full:
                self._queued_bytes += size
                self.jobs.put((*job, size) if job[0] == "chunk" else job)
        if full:
            self.dropped += 1
            self._drop_log.warning("update queue full (%d jobs waiting): %s dropped", self.jobs.qsize(), job[0])
        return not full

    def poll(self) -> list[tuple[str, object]]:
        out = []
        while self.outcomes:
            out.append(self.outcomes.popleft())
        return out

    def commit(self, ready: Ready) -> dict:
        """After the switch: record the new current bundle atomically, prune, return its event."""
        _pause("switched")
        self.store.record(ready.sha, self.running[0], rollback=ready.status == "rolled_back")
        self.running, self.signer = (ready.sha, ready.manifest.release), ready.signer
        self._busy.discard(ready.sha)
        self.store.prune(protect=(*self._busy, ready.sha))
        ev = event(ready.status, ready.sha, ready.manifest.release, None, origin=ready.origin,
                   pack_sha256=ready.pack_sha, name=ready.manifest.name, signed_by=ready.signer,
                   selftest=ready.selftest)
        self._write_event(ready.event_file, ev)
        return ev

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            try:
                job = self.jobs.get(timeout=SCAN_S)
            except queue.Empty:
                job = None
            try:
                if job is not None:
                    self._run(job)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + SCAN_S
                    self._scan()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one bad job
                log.exception("update worker: %s", exc)

    def _run(self, job: tuple) -> None:
        if job[0] == "chunk":
            with self._jobs_lock:
                self._queued_bytes -= job[2]
            self._chunk(job[1])
        elif job[0] == "pack":
            self._install(*job[1:])
        elif job[0] == "rollback":
            self._rollback(*job[1:])

    def _chunk(self, chunk) -> None:
        try:
            progress, pack = self.reassembler.add(chunk)
        except (BadChunk, OSError) as exc:
            self._reject(str(exc), pack_sha256=chunk.sha256, origin="mqtt")
            return
        self.outcomes.append(("status", progress.status()))
        if pack is not None:
            self._install(pack, "mqtt", True, None, chunk.sha256)

    def _scan(self) -> None:
        """Stale partial transfers; packs and rollback requests in the inbox (`leukedge install`) and the drop folder."""
        self.reassembler.expire(room=0)
        for p in sorted(self.store.inbox.iterdir()):
            if p.name.startswith(".") or p.is_symlink() or not p.is_file():
                continue
            if p.suffix == ".leukedge":
                self._install(p, "install", True, p.with_name(p.name + ".event.json"), None)
            elif p.suffix == ".rollback":
                try:
                    factory = bool(json.loads(p.read_text() or "{}").get("factory", False))
                except (ValueError, AttributeError, OSError):
                    factory = False
                p.unlink(missing_ok=True)
                self._rollback(factory, "install", p.with_name(p.name + ".event.json"))
        drop = self.up.watch_dir
        if drop is None or not Path(drop).is_dir():
            return
        for p in sorted(Path(drop).glob("*.leukedge")):
            if p.name.startswith(".") or p.is_symlink() or not p.is_file():
                continue
            st = p.stat()
            key = (p, st.st_size, st.st_mtime_ns)
            if key in self._drop_done:
                continue
            if self._drop_seen.get(p) == key:  # unchanged across two scans: copied completely
                self._drop_done.add(key)
                self._install(p, "drop", False, p.with_name(p.name + ".event.json"), None)
            else:
                self._drop_seen[p] = key

    def _install(self, pack: Path, origin: str, remove: bool, event_file: Path | None, pack_sha: str | None) -> None:
        tmp, sha, release, placed = None, None, None, False
        try:
            size = pack.stat().st_size
            if size > self.up.max_bytes:
                raise BundleError(f"pack of {size} bytes is over update.max_bytes ({self.up.max_bytes})")
            pack_sha = pack_sha or sha256_file(pack)
            if origin == "drop" and self.store.seen(pack_sha):
                log.info("drop folder: %s already handled, skipped", pack.name)
                return
            free = shutil.disk_usage(self.store.root).free
            if free < 2 * size + FREE_MARGIN:
                raise BundleError(f"not enough disk space in {self.store.root}: {free} bytes free, "
                                  f"need {2 * size + FREE_MARGIN}")
            tmp = self.store.root / f".tmp-{uuid.uuid4().hex[:12]}"
            names = safe_unpack(pack, tmp, self.up.max_bytes)
            _pause("unpacked")
            key = verify_signature(tmp, self.keys)
            sha = manifest_sha256(tmp)
            manifest = load_manifest(tmp, verify=False)
            release = manifest.release
            outside = [e.path for e in manifest.files if e.path not in names]  # only the pack's own plain files
            if outside:
                raise BundleError(f"manifest lists {outside[0]!r}, which is not a file of the pack")
            load_manifest(tmp)  # every sha256
            running_sha, running_release = self.running
            if sha == running_sha:
                raise BundleError("this bundle is already running")
            if running_release is not None and (release or 0) <= running_release:
                raise BundleError(f"release {release} is not newer than the running release {running_release} "
                                  "(downgrades only through rollback)")
            final = self.store.path(sha)
            self._busy.add(sha)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            tmp, placed = None, True
            ready = self._load(final, sha, manifest, key.fingerprint, "installed", origin, event_file, pack_sha)
            self.outcomes.append(("ready", ready))
        except Exception as exc:  # noqa: BLE001 - any failure is a rejection with its reason
            self._busy.discard(sha)
            if placed and sha not in self.store.state()["history"]:  # unusable here: do not keep it
                shutil.rmtree(self.store.path(sha), ignore_errors=True)
            self._reject(_reason(exc), sha, release, event_file, origin=origin, pack_sha256=pack_sha)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if remove:
                pack.unlink(missing_ok=True)
            if origin == "drop" and pack_sha:
                self.store.mark_seen(pack_sha)

    def _rollback(self, factory: bool, origin: str, event_file: Path | None = None) -> None:
        target = self.factory_sha if factory else self.store.previous()
        try:
            if target is None:
                raise BundleError("no previous bundle to roll back to")
            if target == self.running[0]:
                raise BundleError("already running the bundle to roll back to")
            path = self.locate(target)
            key = verify_signature(path, self.keys)
            manifest = load_manifest(path)
            self._busy.add(target)
            self.outcomes.append(("ready", self._load(path, target, manifest, key.fingerprint, "rolled_back",
                                                      origin, event_file, None)))
        except Exception as exc:  # noqa: BLE001
            self._busy.discard(target)
            self._reject(_reason(exc), target, None, event_file, origin=origin, rollback=True)

    def _load(self, path, sha, manifest, signer, status, origin, event_file, pack_sha) -> Ready:
        b = self.cfg.backend
        backend, entry = load_for_manifest(path, manifest, backend=b.name, threads=b.threads,
                                           allow_fallback=b.allow_fallback, device=b.device)
        try:
            report = selftest.run(path, manifest, entry, backend)
        except BaseException:
            backend.close()
            raise
        _pause("tested")
        return Ready(path, sha, manifest, backend, entry, signer, status, origin, event_file, pack_sha,
                     report.to_dict() if report else None)

    def _reject(self, reason: str, sha: str | None = None, release: int | None = None,
                event_file: Path | None = None, **extra) -> None:
        log.warning("bundle update rejected: %s", reason)
        ev = event("rejected", sha, release, reason, **extra)
        self._write_event(event_file, ev)
        self.outcomes.append(("event", ev))

    @staticmethod
    def _write_event(path: Path | None, ev: dict) -> None:
        if path is None:
            return
        try:
            atomic_write(path, (json.dumps(ev) + "\n").encode())
        except OSError as exc:  # a read-only USB stick: the event still goes out over MQTT
            log.info("could not write %s: %s", path, exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip()
    if isinstance(exc, BadInput):
        return text[:300]
    return f"internal error: {type(exc).__name__}: {text}"[:300]


def open_updater(cfg) -> Updater | None:
    """An Updater when trust keys are configured; without keys the box runs only `bundle:`."""
    return Updater(cfg) if cfg.trust.keys else None
