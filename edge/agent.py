"""The edge agent: source -> gate -> preprocess -> infer -> sample pool -> outbox -> MQTT.

`Agent(config).run()` is the whole program; `leukedge agent` only builds the config.
The loop below is the spine; every stage is a small object from its own module, built
by `edge.components` and reporting its own figures for the `stats` message.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from edge import __version__
from edge.commands import apply
from edge.components import Components, build_components, open_guard, sample_threshold_in_force, threshold_in_force
from edge.errors import BadFrame
from edge.loglimit import LimitedLog
from edge.messages import EVENT, RESULT, SAMPLE, SCHEMA, STATS, encode, result_payload, utc_now
from edge.pixels import as_rgb_uint8, frame_min_side, preprocess_rgb, reduce_like_jpeg
from edge.ood import guard_state
from edge.postprocess import classify_with_features
from edge.sources import END, SourceError
from edge.station import Station, StationView
from edge.stats import cpu_temperature
from edge.trust import manifest_sha256
from edge.update import open_updater

log = logging.getLogger("edge.agent")
SOURCE_ENDED = "source ended; serving"  # the log line a supervisor (the demo) waits for
NO_FIELD_FRAMES = 100  # a source with no field after this many frames gets its rejections explained


def frame_sha256(file: bytes | None, rgb) -> str:
    """frame.sha256: over the image file's bytes when the frame came from one (what `sha256sum`
    says of it), else over the RGB pixels as received (a camera)."""
    data = file if file is not None else rgb.data if rgb.flags.c_contiguous else rgb.tobytes()
    return hashlib.sha256(data).hexdigest()


class Agent:
    def __init__(self, config, source=None):
        self.cfg = config
        self.source = source  # a Watchdog for in-process use; None = from config
        self.parts: Components | None = None  # built by start()
        self.updater = None  # edge.update.Updater when trust keys are configured
        self.stop_requested = False
        self.signals = 0
        self.seq = 0
        self.station = None  # edge.station.Station after start(): page, health, systemd notify
        self._bad_log = LimitedLog(log)
        self._hasher: ThreadPoolExecutor | None = None  # start(): hashes raw frames beside the model
        self._no_field_said = False

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until a finite source ends, `max_frames`, or SIGTERM/SIGINT; then flush. Returns 0;
        a file source broken part-way raises SourceError (exit 2) after the flush."""
        with self._signals():  # before start(): a SIGTERM while the model loads still exits cleanly
            self.start()
            try:
                while not self.stop_requested:
                    frame = self._next_frame()
                    if frame is END:
                        self.linger()
                        break
                    if frame is not None:
                        self.process(frame)
                    self.housekeeping()
                    if not self.parts.stats.fields and self.parts.stats.frames >= NO_FIELD_FRAMES:
                        self._explain_no_field()
                    if self.cfg.max_frames and self.parts.stats.frames >= self.cfg.max_frames:
                        break
            finally:
                self.shutdown()
        broken = getattr(self.parts.source, "broken", None)
        if broken:  # after the flush: what was classified is queued; the file itself is bad input
            raise SourceError(broken)
        return 0

    def process(self, frame) -> dict | None:
        """One frame: check it, gate it, classify it if it is a new field. Returns the result, if any.

        `total` (the result's and the stats') runs from the frame check to the model's answer."""
        parts = self.parts
        stats = parts.stats
        stats.frames += 1
        stats.time("decode", frame.decode_ms)
        t0 = time.perf_counter()
        try:
            with stats.stage("gate"):
                raw = as_rgb_uint8(frame.image, self.cfg.source.max_pixels)
                rgb = reduce_like_jpeg(raw, parts.min_side)
                verdict = parts.gate.check(rgb, still=frame.still)
        except BadFrame as exc:
            return self._bad_frame(frame.name, exc)
        if self.station is not None:
            self.station.on_frame(rgb, verdict)
        if not verdict.accept:
            return None
        # The frame's hash (a raw camera frame is megabytes: docs/edge.md) runs beside preprocessing
        # and the model: hashlib releases the GIL, and the answer does not wait for it.
        digest = self._hasher.submit(frame_sha256, frame.file, raw)
        with stats.stage("pre"):
            x = preprocess_rgb(rgb, parts.manifest.input)
        with stats.stage("invoke"):  # all TTA passes and the manifest's post-processing
            probs, features = classify_with_features(parts.backend.infer_with_features, x, parts.manifest.postprocess)
        ood = None
        if parts.guard is not None:
            with stats.stage("guard"):
                ood = parts.guard.score_field(features, x)
        self.seq += 1
        stats.time("total", _ms_since(t0))
        result = self.build_result(rgb, verdict.focus, probs, digest.result(), ood=ood,
                                   pre=stats.last["pre"], invoke=stats.last["invoke"], total=stats.last["total"])
        self.emit(RESULT, result)
        unfamiliar = ood is not None and ood.unfamiliar
        self.emit(SAMPLE, parts.samples.add(self.seq, probs, unfamiliar=unfamiliar))
        stats.fields += 1
        stats.unfamiliar += unfamiliar
        stats.time("overhead", frame.decode_ms + _ms_since(t0) - stats.last["invoke"])
        return result

    def housekeeping(self) -> None:
        """Between frames: commands, idle samples, PUBACKs and backlog, periodic stats."""
        parts = self.parts
        while parts.publisher.commands:
            self.command(parts.publisher.commands.popleft())
        self.emit(SAMPLE, parts.samples.tick())
        parts.outbox.flush()  # messages held in memory while the disk refused writes
        if parts.results:
            parts.results.flush()
        if self.updater is not None:
            self._updates()
        parts.publisher.pump()
        if self.station is not None:
            self.station.tick()
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.cfg.mqtt.stats_interval_s
            self.publish_stats()

    # ------------------------------------------------------------------ stages

    def start(self) -> None:
        cfg = self.cfg
        self.updater = updater = open_updater(cfg)  # None without trust keys: only `bundle:` runs, no updates
        self.parts = parts = build_components(cfg, self.source, updater.start_bundle() if updater else None)
        if updater:
            updater.started(parts.bundle, parts.manifest, parts.backend, parts.entry)
            parts.publisher.chunk_limit = cfg.update.max_bytes
        parts.publisher.set_info(self.info())
        parts.publisher.start()
        if updater:
            updater.start()
        self._next_stats = time.monotonic() + cfg.mqtt.stats_interval_s
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="frame-hash")
        log.info("agent %s: %s on %s, source %s, mqtt %s, outbox backlog %d", cfg.device_id, parts.entry.path,
                 parts.backend.name, cfg.source.safe_uri, cfg.mqtt.safe_url, parts.outbox.rows)
        self.station = Station.start(cfg, self.info(), command=self.command, view=self.station_view)

    def build_result(self, rgb, focus: float, probs, sha256: str | None = None, ood=None, **latency) -> dict:
        """The result message; frame.sha256 as `frame_sha256` gives it (of the pixels when not given)."""
        parts = self.parts
        field = parts.samples.field_number()  # may open a sample: first
        frame = {"sha256": sha256 or frame_sha256(None, rgb),
                 "w": int(rgb.shape[1]), "h": int(rgb.shape[0]), "focus": round(focus, 4)}
        return result_payload(
            msg_id=f"{self.cfg.device_id}-{parts.boot}-{self.seq}", seq=self.seq,
            sample_id=parts.samples.sample_id, field=field, probs=probs, labels=parts.manifest.labels,
            refer_below=parts.samples.refer_below, latency_ms=latency, model_sha256=parts.entry.sha256, frame=frame,
            ood=ood.to_dict() if ood is not None else None)

    def emit(self, kind: str, payload: dict | None) -> None:
        """Outbox first (durable), local log, then hand to MQTT."""
        if payload is None:
            return
        parts = self.parts
        with parts.stats.stage("outbox"):
            parts.outbox.put(parts.publisher.topic(kind), encode(payload))
            if parts.results:
                parts.results.write(kind, payload)
        with parts.stats.stage("publish"):
            parts.publisher.pump()
        if self.station is not None:
            self.station.on_message(kind, payload)

    def command(self, cmd) -> None:
        """A validated command (MQTT or the station page), applied between two frames."""
        samples = self.parts.samples
        said = samples.notice
        self.emit(SAMPLE, apply(cmd, samples, self.updater))
        outcome = f": {samples.notice['text']}" if samples.notice is not said else ""
        log.info("command %s %s%s", cmd.name, cmd.sample_id or "", outcome)

    # ------------------------------------------------------------------ bundle updates (edge/update.py)

    def _updates(self) -> None:
        for kind, item in self.updater.poll():
            if kind == "ready":
                self.switch_bundle(item)
            elif kind == "status":  # transfer progress: for the sender, not kept
                self.parts.publisher.publish_now(EVENT, item)
            elif kind == "event":
                self.emit(EVENT, item)

    def switch_bundle(self, ready) -> None:
        """Between two frames: close the open sample, swap the model, record it, announce it."""
        parts, t0 = self.parts, time.perf_counter()
        self.emit(SAMPLE, parts.samples.close("model_change"))
        old = parts.backend
        parts.bundle, parts.manifest, parts.backend, parts.entry = ready.path, ready.manifest, ready.backend, ready.entry
        manifest = parts.manifest
        parts.guard, parts.guard_off = open_guard(parts.bundle, manifest, parts.backend)
        parts.samples.use_model(manifest.labels, threshold_in_force(self.cfg, manifest), parts.entry.sha256,
                                manifest.postprocess.pool, manifest.thresholds.min_fields,
                                sample_threshold_in_force(self.cfg, manifest))
        old.close()
        parts.min_side = frame_min_side(manifest.input, self.cfg.gate.analysis_width)
        parts.source.set_min_side(parts.min_side)
        event = self.updater.commit(ready)
        parts.publisher.set_info(self.info())
        self.emit(EVENT, event)
        log.info("bundle %s: now %s release %s (%s) on %s; loop paused %.1f ms for the switch", ready.status,
                 manifest.name, manifest.release, ready.sha[:12], parts.backend.name, _ms_since(t0))

    def info(self) -> dict:
        parts, cfg, updater = self.parts, self.cfg, self.updater
        manifest = parts.manifest
        factory = updater is None or updater.running[0] == updater.factory_sha
        bundle = {"name": manifest.name, "arch": manifest.arch, "format": parts.entry.format,
                  "model_sha256": parts.entry.sha256, "manifest_sha256": manifest_sha256(parts.bundle),
                  "release": manifest.release, "signed_by": updater.signer if updater else None, "factory": factory,
                  "tta": manifest.postprocess.tta, "postprocess": manifest.postprocess.model_dump()}
        thresholds = {**manifest.thresholds.model_dump(), "refer_below": parts.samples.refer_below,
                      "manifest_refer_below": manifest.thresholds.refer_below,
                      "refer_below_source": "manifest" if cfg.thresholds.refer_below is None else "config",
                      "sample_refer_below": parts.samples.sample_refer_below}
        return {"schema": SCHEMA, "device": cfg.device_id, "agent_version": __version__, "boot": parts.boot,
                "bundle": bundle, "backend": parts.backend.name, "model_file": parts.entry.path,
                "labels": manifest.labels, "thresholds": thresholds,
                "guard": guard_state(parts.guard, parts.guard_off), "source": cfg.source.safe_uri,
                "gate": cfg.gate.mode, "ts": utc_now()}

    def station_view(self) -> StationView:
        """What the station page's snapshot reads, lent for one snapshot in the loop thread."""
        parts, cfg = self.parts, self.cfg
        return StationView(info=self.info, model_sha256=parts.entry.sha256, stats=parts.stats, pool=parts.samples,
                           link=parts.publisher.stats(), source=parts.source.stats(), outbox=parts.outbox,
                           results=parts.results, camera_uri=cfg.source.safe_uri, mqtt_enabled=cfg.mqtt.url is not None,
                           broker=cfg.mqtt.safe_url, gate_mode=cfg.gate.mode)

    def stats_payload(self) -> dict:
        parts, cfg = self.parts, self.cfg
        stats = parts.stats
        return {"schema": SCHEMA, "ts": utc_now(), "device": cfg.device_id, "uptime_s": stats.uptime_s(),
                "fps": stats.fps(), "fields": stats.fields, "latency_ms": stats.percentiles(),
                "outbox": {**parts.outbox.stats(), "inflight": parts.publisher.inflight},
                "result_log": parts.results.stats() if parts.results else None,
                "frames": stats.frame_counts(), "gate_rejected": dict(parts.gate.rejected),
                "backend": parts.backend.name, "source": {"uri": cfg.source.safe_uri, **parts.source.stats()},
                "mqtt": parts.publisher.stats(), "samples_closed": parts.samples.closed,
                "unfamiliar": stats.unfamiliar_counts(),
                "cpu_temp_c": cpu_temperature()}

    def publish_stats(self) -> dict:
        payload = self.stats_payload()
        ob = payload["outbox"]
        disk = f", {ob['in_memory']} in memory (disk: {ob['disk_error']})" if ob["disk_error"] or ob["in_memory"] else ""
        log.info("stats: %.1f fps, %d fields, backlog %d%s, dropped %d, bad frames %d, source %s",
                 payload["fps"], payload["fields"], ob["backlog"], disk, ob["dropped"],
                 payload["frames"]["bad"], payload["source"]["state"])
        self.parts.publisher.publish_now(STATS, payload)
        return payload

    def shutdown(self) -> None:
        """Close the open sample, wait (bounded) for the backlog to be acknowledged, say `offline`."""
        parts = self.parts
        self._hasher.shutdown()
        if self.station is not None:
            self.station.stop()
        if not parts.stats.fields and parts.stats.frames:
            self._explain_no_field()
        self.emit(SAMPLE, parts.samples.close("shutdown"))
        if self.updater:
            self.updater.stop()
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while not parts.publisher.drained() and time.monotonic() < deadline and self.signals < 2:
            parts.publisher.pump()
            time.sleep(0.01)
        self.publish_stats()
        parts.publisher.stop()
        parts.source.close()
        if parts.results:
            parts.results.close()
        parts.outbox.close()
        log.info("agent stopped: %d fields, %d still queued in the outbox", parts.stats.fields, parts.outbox.rows)

    # ------------------------------------------------------------------ helpers

    def _next_frame(self):
        try:
            return self.parts.source.read()
        except BadFrame as exc:
            self.parts.stats.frames += 1
            self._bad_frame("source", exc)
            return None

    def _bad_frame(self, name: str, exc: BadFrame) -> None:
        """Count by the reason set where the frame was refused; name it in the results log when it
        comes from a file, once (a live source's flood and a looped folder's replays are only
        counted, so they cannot rotate results out of the log)."""
        parts = self.parts
        parts.stats.bad[exc.reason] += 1
        self._bad_log.warning("bad frame skipped (%s): %s", exc.reason, exc)
        if parts.results and not getattr(parts.source, "live", False) and not getattr(parts.source, "eofs", 0):
            parts.results.write("skipped", {"ts": utc_now(), "frame": exc.frame or name, "reason": exc.reason,
                                        "detail": str(exc)})

    def _explain_no_field(self) -> None:
        """Once: why a source has given no field yet (gate rejections and bad frames, with the settings)."""
        if self._no_field_said:
            return
        self._no_field_said = True
        parts = self.parts
        bad = parts.stats.bad
        why = [parts.gate.explain()] if sum(parts.gate.rejected.values()) else []
        if bad:
            why.append(f"{sum(bad.values())} bad frames ({', '.join(f'{k} {v}' for k, v in bad.most_common())})")
        log.warning("no field in the first %d frames: %s", parts.stats.frames, "; ".join(why))

    def linger(self) -> None:
        """After a finite source: keep the page, commands and MQTT up for `ui.linger_s` (-1: until stopped)."""
        wait = self.cfg.ui.linger_s
        if not wait:
            return
        log.info("%s %s", SOURCE_ENDED, "until stopped" if wait < 0 else f"{wait:.0f} s more")
        end = time.monotonic() + (wait if wait > 0 else float("inf"))
        while not self.stop_requested and time.monotonic() < end:
            self.housekeeping()
            time.sleep(0.05)

    def request_stop(self, *_) -> None:
        """SIGTERM/SIGINT: finish the frame in hand, flush, exit. A second signal skips the drain."""
        self.signals += 1
        self.stop_requested = True

    @contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {signum: signal.signal(signum, self.request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
