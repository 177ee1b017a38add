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
from edge.components import Components, build_components, refer_below
from edge.errors import BadFrame
from edge.loglimit import LimitedLog
from edge.messages import SCHEMA, encode, result_payload, utc_now
from edge.pixels import as_rgb_uint8, frame_min_side, preprocess_rgb, reduce_like_jpeg
from edge.postprocess import classify
from edge.sources import END
from edge.station import Station
from edge.stats import cpu_temperature

log = logging.getLogger("edge.agent")
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
            from edge.sources import SourceError

            raise SourceError(broken)
        return 0

    def process(self, frame) -> dict | None:
        """One frame: check it, gate it, classify it if it is a new field. Returns the result, if any.

        `total` (the result's and the stats') runs from the frame check to the model's answer."""
        p = self.parts
        st = p.stats
        st.frames += 1
        st.time("decode", frame.decode_ms)
        t0 = time.perf_counter()
        try:
            with st.stage("gate"):
                raw = as_rgb_uint8(frame.image, self.cfg.source.max_pixels)
                rgb = reduce_like_jpeg(raw, p.min_side)
                verdict = p.gate.check(rgb, still=frame.still)
        except BadFrame as exc:
            return self._bad_frame(frame.name, exc)
        if self.station is not None:
            self.station.on_frame(rgb, verdict)
        if not verdict.accept:
            return None
        # The frame's hash (a raw camera frame is megabytes: docs/edge.md) runs beside preprocessing
        # and the model: hashlib releases the GIL, and the answer does not wait for it.
        digest = self._hasher.submit(frame_sha256, frame.file, raw)
        with st.stage("pre"):
            x = preprocess_rgb(rgb, p.manifest.input)
        with st.stage("invoke"):  # all TTA passes and the manifest's post-processing
            probs = classify(p.backend.infer, x, p.manifest.postprocess)
        self.seq += 1
        st.time("total", _ms_since(t0))
        result = self.build_result(rgb, verdict.focus, probs, digest.result(),
                                   pre=st.last["pre"], invoke=st.last["invoke"], total=st.last["total"])
        self.emit("result", result)
        self.emit("sample", p.samples.add(self.seq, probs))
        st.fields += 1
        st.time("overhead", frame.decode_ms + _ms_since(t0) - st.last["invoke"])
        return result

    def housekeeping(self) -> None:
        """Between frames: commands, idle samples, PUBACKs and backlog, periodic stats."""
        p = self.parts
        while p.publisher.commands:
            self.command(p.publisher.commands.popleft())
        self.emit("sample", p.samples.tick())
        p.outbox.flush()  # messages held in memory while the disk refused writes
        if p.results:
            p.results.flush()
        if self.updater is not None:
            self._updates()
        p.publisher.pump()
        if self.station is not None:
            self.station.tick(self)
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.cfg.mqtt.stats_interval_s
            self.publish_stats()

    # ------------------------------------------------------------------ stages

    def start(self) -> None:
        from edge.update import open_updater

        cfg = self.cfg
        self.updater = up = open_updater(cfg)  # None without trust keys: only `bundle:` runs, no updates
        self.parts = p = build_components(cfg, self.source, up.start_bundle() if up else None)
        if up:
            up.started(p.bundle, p.manifest, p.backend, p.entry)
            p.publisher.chunk_limit = cfg.update.max_bytes
        p.publisher.set_info(self.info())
        p.publisher.start()
        if up:
            up.start()
        self._next_stats = time.monotonic() + cfg.mqtt.stats_interval_s
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="frame-hash")
        log.info("agent %s: %s on %s, source %s, mqtt %s, outbox backlog %d", cfg.device_id, p.entry.path,
                 p.backend.name, cfg.source.safe_uri, cfg.mqtt.safe_url, p.outbox.rows)
        self.station = Station.start(self)

    def build_result(self, rgb, focus: float, probs, sha256: str | None = None, **latency) -> dict:
        """The result message; frame.sha256 as `frame_sha256` gives it (of the pixels when not given)."""
        p = self.parts
        m, field = p.manifest, p.samples.field_number()  # may open a sample: first
        frame = {"sha256": sha256 or frame_sha256(None, rgb),
                 "w": int(rgb.shape[1]), "h": int(rgb.shape[0]), "focus": round(focus, 4)}
        return result_payload(
            msg_id=f"{self.cfg.device_id}-{p.boot}-{self.seq}", seq=self.seq, sample_id=p.samples.sample_id,
            field=field, probs=probs, labels=m.labels, refer_below=p.samples.refer_below,
            latency_ms=latency, model_sha256=p.entry.sha256, frame=frame)

    def emit(self, kind: str, payload: dict | None) -> None:
        """Outbox first (durable), local log, then hand to MQTT."""
        if payload is None:
            return
        p = self.parts
        with p.stats.stage("outbox"):
            p.outbox.put(p.publisher.topic(kind), encode(payload))
            if p.results:
                p.results.write(kind, payload)
        with p.stats.stage("publish"):
            p.publisher.pump()
        if self.station is not None:
            self.station.on_message(kind, payload)

    def command(self, cmd) -> None:
        log.info("command %s %s", cmd.name, cmd.sample_id or "")
        samples = self.parts.samples
        if cmd.name == "sample/start":
            self.emit("sample", samples.open(cmd.sample_id))
        elif cmd.name == "sample/end":
            self.emit("sample", samples.close("command"))
        elif cmd.name == "sample/id":
            samples.set_id(cmd.sample_id)
        elif cmd.name == "bundle/chunk" and self.updater:
            self.updater.submit_chunk(cmd.body)
        elif cmd.name == "bundle/rollback" and self.updater:
            self.updater.submit_rollback(cmd.body["factory"])

    # ------------------------------------------------------------------ bundle updates (edge/update.py)

    def _updates(self) -> None:
        for kind, item in self.updater.poll():
            if kind == "ready":
                self.switch_bundle(item)
            elif kind == "status":  # transfer progress: for the sender, not kept
                self.parts.publisher.publish_now("event", item)
            elif kind == "event":
                self.emit("event", item)

    def switch_bundle(self, ready) -> None:
        """Between two frames: close the open sample, swap the model, record it, announce it."""
        p, t0 = self.parts, time.perf_counter()
        self.emit("sample", p.samples.close("model_change"))
        old = p.backend
        p.bundle, p.manifest, p.backend, p.entry = ready.path, ready.manifest, ready.backend, ready.entry
        s = p.samples
        s.labels, s.refer_below, s.model_sha256 = p.manifest.labels, refer_below(self.cfg, p.manifest), p.entry.sha256
        s.pooling = p.manifest.postprocess.pool
        old.close()
        p.min_side = frame_min_side(p.manifest.input, self.cfg.gate.analysis_width)
        p.source.set_min_side(p.min_side)
        event = self.updater.commit(ready)
        p.publisher.set_info(self.info())
        self.emit("event", event)
        log.info("bundle %s: now %s release %s (%s) on %s; loop paused %.1f ms for the switch", ready.status,
                 p.manifest.name, p.manifest.release, ready.sha[:12], p.backend.name, _ms_since(t0))

    def info(self) -> dict:
        from edge.trust import manifest_sha256

        p, cfg, up = self.parts, self.cfg, self.updater
        m = p.manifest
        bundle = {"name": m.name, "arch": m.arch, "format": p.entry.format, "model_sha256": p.entry.sha256,
                  "manifest_sha256": manifest_sha256(p.bundle), "release": m.release,
                  "signed_by": up.signer if up else None, "factory": up is None or up.running[0] == up.factory_sha,
                  "tta": m.postprocess.tta, "postprocess": m.postprocess.model_dump()}
        thresholds = {**m.thresholds.model_dump(), "refer_below": p.samples.refer_below,
                      "manifest_refer_below": m.thresholds.refer_below,
                      "refer_below_source": "manifest" if cfg.thresholds.refer_below is None else "config"}
        return {"schema": SCHEMA, "device": cfg.device_id, "agent_version": __version__, "boot": p.boot,
                "bundle": bundle, "backend": p.backend.name, "model_file": p.entry.path, "labels": m.labels,
                "thresholds": thresholds, "source": cfg.source.safe_uri, "gate": cfg.gate.mode,
                "ts": utc_now()}

    def stats_payload(self) -> dict:
        p, cfg = self.parts, self.cfg
        st = p.stats
        return {"schema": SCHEMA, "ts": utc_now(), "device": cfg.device_id, "uptime_s": st.uptime_s(),
                "fps": st.fps(), "fields": st.fields, "latency_ms": st.percentiles(),
                "outbox": {**p.outbox.stats(), "inflight": p.publisher.inflight},
                "result_log": p.results.stats() if p.results else None,
                "frames": st.frame_counts(), "gate_rejected": dict(p.gate.rejected), "backend": p.backend.name,
                "source": {"uri": cfg.source.safe_uri, **p.source.stats()}, "mqtt": p.publisher.stats(),
                "samples_closed": p.samples.closed, "cpu_temp_c": cpu_temperature()}

    def publish_stats(self) -> dict:
        payload = self.stats_payload()
        ob = payload["outbox"]
        disk = f", {ob['in_memory']} in memory (disk: {ob['disk_error']})" if ob["disk_error"] or ob["in_memory"] else ""
        log.info("stats: %.1f fps, %d fields, backlog %d%s, dropped %d, bad frames %d, source %s",
                 payload["fps"], payload["fields"], ob["backlog"], disk, ob["dropped"],
                 payload["frames"]["bad"], payload["source"]["state"])
        self.parts.publisher.publish_now("stats", payload)
        return payload

    def shutdown(self) -> None:
        """Close the open sample, wait (bounded) for the backlog to be acknowledged, say `offline`."""
        p = self.parts
        self._hasher.shutdown()
        if self.station is not None:
            self.station.stop()
        if not p.stats.fields and p.stats.frames:
            self._explain_no_field()
        self.emit("sample", p.samples.close("shutdown"))
        if self.updater:
            self.updater.stop()
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while not p.publisher.drained() and time.monotonic() < deadline and self.signals < 2:
            p.publisher.pump()
            time.sleep(0.01)
        self.publish_stats()
        p.publisher.stop()
        p.source.close()
        if p.results:
            p.results.close()
        p.outbox.close()
        log.info("agent stopped: %d fields, %d still queued in the outbox", p.stats.fields, p.outbox.rows)

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
        p = self.parts
        p.stats.bad[exc.reason] += 1
        self._bad_log.warning("bad frame skipped (%s): %s", exc.reason, exc)
        if p.results and not getattr(p.source, "live", False) and not getattr(p.source, "eofs", 0):
            p.results.write("skipped", {"ts": utc_now(), "frame": exc.frame or name, "reason": exc.reason,
                                        "detail": str(exc)})

    def _explain_no_field(self) -> None:
        """Once: why a source has given no field yet (gate rejections and bad frames, with the settings)."""
        if self._no_field_said:
            return
        self._no_field_said = True
        p = self.parts
        bad = p.stats.bad
        why = [p.gate.explain()] if sum(p.gate.rejected.values()) else []
        if bad:
            why.append(f"{sum(bad.values())} bad frames ({', '.join(f'{k} {v}' for k, v in bad.most_common())})")
        log.warning("no field in the first %d frames: %s", p.stats.frames, "; ".join(why))

    def linger(self) -> None:
        """After a finite source: keep the page, commands and MQTT up for `ui.linger_s` (-1: until stopped)."""
        wait = self.cfg.ui.linger_s
        if not wait:
            return
        log.info("source ended; serving %s", "until stopped" if wait < 0 else f"{wait:.0f} s more")
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
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
