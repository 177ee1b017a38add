"""What the station page shows, kept in the agent's memory and fed by the loop.

The loop's hooks only store references and append to short deques (no copies, no
encoding, no locks); `snapshot()` turns them into one JSON-ready dict, and it runs in
the loop thread too, at most a few times a second and only while someone is watching,
so the server thread reads finished dicts and never touches the agent's objects. That
is what keeps a slow browser from slowing classification.
"""

from __future__ import annotations

import bisect
import collections
import functools
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

import numpy as np

from edge.messages import RESULT, SAMPLE, prob_map, utc_now
from edge.sources.folder import IMAGE_SUFFIXES
from edge.stats import cpu_temperature

log = logging.getLogger(__name__)

RECENT_FIELDS, RECENT_SAMPLES = 20, 10
SCHEMA = 1
INVOKE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class StationView(NamedTuple):
    """What one snapshot reads from the loop, lent by the agent (`Agent.station_view`) in the
    loop thread: live objects for the counters, plain values for the rest."""

    info: Callable[[], dict]  # the agent's info message, asked for only after a bundle switch
    model_sha256: str  # the model file running now
    stats: object  # edge.stats.Stats
    pool: object  # edge.samples.SamplePool
    link: dict  # the publisher's stats()
    source: dict  # the source's stats()
    outbox: object  # edge.outbox.Outbox
    results: object | None  # edge.resultlog.ResultLog, when configured
    camera_uri: str  # source.safe_uri
    mqtt_enabled: bool
    broker: str  # mqtt.safe_url
    gate_mode: str


class InvokeHistogram:
    """Invoke seconds in Prometheus buckets: a bisect and two additions per field in the loop
    (prometheus-client's own Histogram takes a lock per observation); /metrics exports a copy."""

    def __init__(self):
        self.counts = [0] * (len(INVOKE_BUCKETS_S) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(INVOKE_BUCKETS_S, seconds)] += 1
        self.sum += seconds

    def copy(self) -> tuple[list[int], float]:
        return list(self.counts), self.sum


def _local_tz() -> dict:
    """The box's time zone, so the page shows the box's local time on any viewer's device."""
    now = datetime.now().astimezone()
    return {"name": now.tzname(), "offset_min": int(now.utcoffset().total_seconds() // 60)}


def _since(t: float | None) -> str | None:
    """A monotonic time -> ISO UTC wall time."""
    if t is None:
        return None
    wall = time.time() - (time.monotonic() - t)
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class StationState:
    def __init__(self, info: dict, model_file: Path | None = None, page: dict | None = None):
        self.info = info
        self.page = page or {}  # listen address, tls, lan: shown as warnings
        self.fields: collections.deque[dict] = collections.deque(maxlen=RECENT_FIELDS)
        self.samples: collections.deque[dict] = collections.deque(maxlen=RECENT_SAMPLES)
        self.decisions: collections.Counter[str] = collections.Counter()
        self.sample_decisions: collections.Counter[str] = collections.Counter()
        self.invoke = InvokeHistogram()
        self.latest: dict | None = None  # the latest result message
        self.last_sample: dict | None = None  # the latest closed sample message
        self.frame = None  # the latest accepted field (a reference, encoded on demand by the server)
        self.frame_version = 0
        self.gate_reason: str | None = None
        self.first_frame_t: float | None = None
        self.offline_since: float | None = time.monotonic()
        self.model_file, self.model_change = model_file, None
        self._note_model(info, previous=self._recorded_model())
        self.tz = _local_tz()
        self._slow_t, self._temp, self._disk = -1e9, None, None  # read every 10 s: sysfs and statvfs
        self._pool: tuple = (None, None, 0)  # (open sample, sum of its probabilities, fields summed)

    # ------------------------------------------------------------------ hooks (loop thread)

    def on_frame(self, rgb, verdict) -> None:
        self.gate_reason = verdict.reason
        if self.first_frame_t is None:
            self.first_frame_t = time.monotonic()
        if verdict.accept:
            self.frame = rgb
            self.frame_version += 1

    def on_message(self, kind: str, payload: dict) -> None:
        p = payload
        if kind == RESULT:
            self.latest = p
            self.decisions[p["decision"]] += 1
            self.invoke.observe(p["latency_ms"]["invoke"] / 1e3)
            self.fields.appendleft({"ts": p["ts"], "seq": p["seq"], "field": p["field"], "sample_id": p["sample_id"],
                                    "label": p["label"], "decision": p["decision"]})
        elif kind == SAMPLE:
            self.last_sample = p
            self.sample_decisions[p["decision"]] += 1
            self.samples.appendleft({"ts": p["ts"], "sample_id": p["sample_id"], "n_fields": p["n_fields"],
                                     "label": p["label"], "decision": p["decision"], "reason": p["reason"]})

    # ------------------------------------------------------------------ snapshot (loop thread)

    def snapshot(self, view: StationView) -> dict:
        """Everything the page shows, as one JSON-ready dict (schema in docs/edge.md)."""
        if view.model_sha256 != self.info["bundle"]["model_sha256"]:  # a bundle switched while running
            info = view.info()
            self._note_model(info, previous=_model(self.info))
            self.info = info
        stats, pool, link, src = view.stats, view.pool, view.link, view.source
        connected, enabled = link["connected"], view.mqtt_enabled
        now = time.monotonic()
        if connected:
            self.offline_since = None
        elif self.offline_since is None:
            self.offline_since = now
        if now - self._slow_t > 10:
            self._slow_t, self._temp, self._disk = now, cpu_temperature(), disk_space(view.outbox.path.parent)
        kind = source_kind(view.camera_uri)
        camera = {"uri": view.camera_uri, "kind": kind, "kind_name": SOURCE_NAMES[kind], "state": src["state"],
                  "last_error": src["last_error"], "reopens": src["reopens"]}
        mqtt = {"enabled": enabled, "connected": connected, "state": mqtt_state(enabled, connected), "broker": view.broker,
                "offline_since": None if connected or not enabled else _since(self.offline_since),
                "last_error": link["last_error"]}
        outbox = {**view.outbox.stats(), "oldest_age_s": view.outbox.oldest_age_s(),
                  "disk_free_mb": None if self._disk is None else round(self._disk[0] / 2**20),
                  "disk_free_bytes": None if self._disk is None else self._disk[0],
                  "result_log_error": view.results.stats()["disk_error"] if view.results else None}
        counts = {"frames": stats.frames, "fields": stats.fields, "unfamiliar": stats.unfamiliar,
                  "bad_frames": dict(stats.bad),
                  "results": dict(self.decisions), "samples_closed": pool.closed,
                  "samples": dict(self.sample_decisions),
                  "last_field_unix": None if self.latest is None else _unix(self.latest["ts"])}
        state = {
            "schema": SCHEMA, "ts": utc_now(), "tz": self.tz, "device": self.info["device"],
            "agent_version": self.info["agent_version"], "model": _model(self.info),
            "camera": camera, "mqtt": mqtt, "outbox": outbox, "cpu_temp_c": self._temp, "counts": counts,
            "gate": {"mode": view.gate_mode, "reason": self.gate_reason},
            "field": self._field(), "sample": self._open_sample(pool), "last_sample": self.last_sample,
            "recent_fields": list(self.fields), "recent_samples": list(self.samples),
            "model_change": self.model_change, "page": self.page,
        }
        state["warnings"] = self._warnings(state)
        return state

    def _field(self) -> dict | None:
        r = self.latest
        if r is None:
            return None
        return {"id": r["id"], "ts": r["ts"], "seq": r["seq"], "sample_id": r["sample_id"], "field": r["field"],
                "label": r["label"], "probs": r["probs"], "decision": r["decision"], "reason": r.get("reason"),
                "ood": r.get("ood"), "focus": r["frame"]["focus"], "invoke_ms": r["latency_ms"]["invoke"],
                "frame_version": self.frame_version}

    def _open_sample(self, pool) -> dict:
        """The open sample with its decision so far (the rule a close applies), or none open; the
        pool's counts of unpooled fields and its last command's notice either way."""
        common = {"min_fields": pool.min_fields, "unpooled": pool.unpooled, "auto_open": bool(pool.cfg.auto_open),
                  "notice": pool.notice}
        s = pool.current
        if s is None:
            return {"open": False, "sample_id": None, "n_fields": 0, "n_unfamiliar": 0, "probs": None, "label": None,
                    "decision": None, "reason": None, "opened": None, **common}
        out = {"open": True, "sample_id": s.sample_id, "n_fields": s.n_fields, "n_unfamiliar": s.n_unfamiliar,
               "opened": s.opened, "probs": None, "label": None, "decision": None, "reason": None, **common}
        if s.n_fields:
            mean = None
            if s.probs:  # a running sum: a slide of thousands of fields costs no more than one of ten
                sample, total, n = self._pool
                if sample is not s:
                    sample, total, n = s, np.zeros_like(s.probs[0], dtype=np.float64), 0
                for p in s.probs[n:]:
                    total = total + p
                self._pool = (sample, total, len(s.probs))
                mean = total / len(s.probs)
                out["probs"] = prob_map(mean, pool.labels)
            out["label"], out["decision"], out["reason"] = pool.verdict(s.n_fields, s.n_unfamiliar, mean)
        return out

    def _warnings(self, s: dict) -> list[dict]:
        """Things the technician must not miss, each with a plain-language line."""
        out = []
        ob = s["outbox"]
        if ob["dropped"] or ob["memory_dropped"]:
            out.append({"kind": "outbox_dropped", "text": f"{ob['dropped'] + ob['memory_dropped']} results dropped: "
                        "the outbox was full for too long without a broker (or a disk). Reconnect the box to the "
                        "network."})
        error = ob["disk_error"] or ob["result_log_error"]
        if error:
            out.append({"kind": "disk", "text": f"Cannot write to the disk ({error}): {ob['in_memory']} results "
                        "held in memory and written back when the disk works again. Free space or replace the card."})
        if not error and self._disk is not None and disk_low(*self._disk):
            out.append({"kind": "disk", "text": f"The disk is almost full ({self._disk[0] / 2**20:.0f} MB free): "
                        "results may soon not be saved. Free space or replace the card."})
        if s["camera"]["state"] != "open":
            out.append({"kind": "camera", "text": source_down(s["camera"]["kind"], s["camera"]["uri"])})
        if self.model_change:
            out.append({"kind": "model_change", "text": "The model changed: "
                        f"{self.model_change['old']['name']} ({self.model_change['old']['short']}) -> "
                        f"{self.model_change['new']['name']} ({self.model_change['new']['short']})"})
        if self.page.get("lan") and not self.page.get("tls"):
            out.append({"kind": "insecure", "text": "This page is served on the network without HTTPS: "
                        "its password crosses the LAN in clear. Set ui.cert_file and ui.key_file."})
        return out

    # ------------------------------------------------------------------ model changes

    def _recorded_model(self) -> dict | None:
        """The model of the previous run: a small JSON file beside the outbox (None on a first run)."""
        if self.model_file is None:
            return None
        try:
            old = json.loads(self.model_file.read_text())
        except (OSError, ValueError):
            return None
        return old if isinstance(old, dict) else None

    def _note_model(self, info: dict, previous: dict | None) -> None:
        """Banner a model other than `previous` (last run's, or the one running until now); record this one."""
        new = _model(info)
        if previous is not None and previous.get("sha256") != new["sha256"]:
            self.model_change = {"old": previous, "new": new, "ts": utc_now()}
        if self.model_file is not None:
            try:
                self.model_file.write_text(json.dumps(new))
            except OSError as exc:
                log.warning("station: cannot record the model in %s (%s)", self.model_file, exc.strerror)


def _unix(ts: str) -> float:
    """A message's ISO UTC time (edge.messages.utc_now) -> unix seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def mqtt_state(enabled: bool, connected: bool) -> str:
    """`off` by configuration (results stay on this box, nothing is wrong), else `connected` or `down`."""
    return "off" if not enabled else "connected" if connected else "down"


def disk_space(folder: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the file system holding the outbox, None when it cannot be read."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    return usage.free, usage.total


def disk_low(free: int, total: int) -> bool:
    """Under 100 MB or 2 % free: the outbox and the results log are about to fail their writes."""
    return free < 100 * 2**20 or free < 0.02 * total


SOURCE_NAMES = {"camera": "Camera", "video": "Video file", "folder": "Image folder", "image": "Image file",
                "stream": "Network stream"}


@functools.lru_cache(maxsize=16)
def source_kind(uri: str) -> str:
    """What the source is, in the terms of edge.sources.make_source: the status bar names it and
    the banner says what to check when it gives no picture (looked at once: a folder that
    vanishes stays a folder)."""
    if uri.startswith(("picam", "cv:", "/dev/video")):
        return "camera"
    if "://" in uri:
        return "stream"
    path = Path(uri)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "folder" if path.is_dir() or not path.suffix else "video"


def _stream_address(uri: str) -> str:
    """A stream URL without its user, password or query (where tokens hide): fit for the page."""
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname or "?", parts.port
    except ValueError:  # an unreadable host or port: name none of it
        return "(see Details)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def source_down(kind: str, uri: str) -> str:
    """The banner while the source gives no picture: what to check, in one sentence, and that the
    box retries by itself (the watchdog reopens it with back-off)."""
    check = {
        "camera": "No picture from the camera: check its cable and power, and that no other program is using it",
        "video": f"No picture from the video file: check that {uri} is still there and readable",
        "image": f"No picture from the image file: check that {uri} is still there and readable",
        "folder": f"No pictures from the image folder: check that {uri} is still there and its images are readable",
        "stream": f"No picture from the network stream: check the network and the stream address {_stream_address(uri)}",
    }[kind]
    return check + "; the box retries by itself."


def _model(info: dict) -> dict:
    """The model as the page shows it; `sample_refer_below` is the slide's cut-off (older bundles
    have none: the slide then refers below the field's `refer_below`)."""
    b, t = info["bundle"], info["thresholds"]
    sample_refer_below = t.get("sample_refer_below")
    return {"name": b["name"], "arch": b.get("arch"), "format": b.get("format"), "sha256": b["model_sha256"],
            "short": b["model_sha256"][:12], "backend": info["backend"], "labels": info["labels"],
            "refer_below": t.get("refer_below"),
            "sample_refer_below": t.get("refer_below") if sample_refer_below is None else sample_refer_below}
