"""The edge agent: source -> gate -> preprocess -> infer -> sample pool -> outbox -> MQTT.

`Agent(config).run()` is the whole program; `leukedge agent` only builds the config.
The loop below is the spine; every stage is a small object from its own module.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from contextlib import contextmanager

from edge.bundle import as_rgb_uint8, preprocess
from edge.errors import BadFrame

log = logging.getLogger("edge.agent")


class Agent:
    def __init__(self, config, source=None):
        self.cfg = config
        self.source = source  # a Watchdog-like object for in-process use; None = from config
        self.stop_requested = False
        self.signals = 0
        self.seq = 0

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until a finite source ends, `max_frames`, or SIGTERM/SIGINT; then flush. Returns 0."""
        from edge.sources import END

        with self._signals():  # before start(): a SIGTERM while the model loads still exits cleanly
            self.start()
            try:
                while not self.stop_requested:
                    frame = self._next_frame()
                    if frame is END:
                        break
                    if frame is not None:
                        self.process(frame)
                    self.housekeeping()
                    if self.cfg.max_frames and self.stats.frames >= self.cfg.max_frames:
                        break
            finally:
                self.shutdown()
        return 0

    def process(self, frame) -> dict | None:
        """One frame: check it, gate it, classify it if it is a new field. Returns the result, if any."""
        st, clock = self.stats, time.perf_counter
        st.frames += 1
        st.time("decode", frame.decode_ms)
        t0 = clock()
        try:
            rgb = as_rgb_uint8(frame.image)
        except BadFrame as exc:
            return self._bad_frame(frame.name, exc)
        verdict = self.gate.check(rgb)
        t1 = clock()
        st.time("gate", (t1 - t0) * 1e3)
        if not verdict.accept:
            return None
        x = preprocess(rgb, self.manifest.input)
        t2 = clock()
        probs = self.backend.infer(x)
        t3 = clock()
        self.seq += 1
        result = self.build_result(rgb, verdict.focus, probs, pre=(t2 - t1) * 1e3, invoke=(t3 - t2) * 1e3,
                                   total=(clock() - t0) * 1e3)
        self.emit("result", result)
        self.emit("sample", self.samples.add(self.seq, probs))
        total = (clock() - t0) * 1e3 + frame.decode_ms
        st.fields += 1
        st.time("pre", (t2 - t1) * 1e3)
        st.time("invoke", (t3 - t2) * 1e3)
        st.time("total", total)
        st.time("overhead", total - (t3 - t2) * 1e3)
        return result

    def housekeeping(self) -> None:
        """Between frames: commands, idle samples, PUBACKs and backlog, periodic stats."""
        pub = self.publisher
        while pub is not None and pub.commands:
            self.command(pub.commands.popleft())
        self.emit("sample", self.samples.tick())
        self._pump()
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.cfg.mqtt.stats_interval_s
            self.publish_stats()

    # ------------------------------------------------------------------ stages

    def start(self) -> None:
        from edge.backends import load_for_manifest
        from edge.bundle import load_manifest
        from edge.gate import Gate
        from edge.outbox import Outbox
        from edge.resultlog import ResultLog
        from edge.samples import SamplePool
        from edge.sources import open_watchdog
        from edge.stats import Stats

        cfg = self.cfg
        self.manifest = load_manifest(cfg.bundle)
        self.backend, self.entry = load_for_manifest(
            cfg.bundle, self.manifest, backend=cfg.backend.name, threads=cfg.backend.threads,
            allow_fallback=cfg.backend.allow_fallback, device=cfg.backend.device)
        if self.source is None:
            self.source = open_watchdog(cfg.source)
        o = cfg.outbox
        self.outbox = Outbox(o.path, o.max_rows, o.max_bytes, o.synchronous)
        self.boot = self.outbox.next_boot()
        self.samples = SamplePool(cfg.sample, cfg.device_id, self.boot, self.manifest.labels,
                                  self.manifest.thresholds.refer_below, self.entry.sha256)
        self.gate, self.stats = Gate(cfg.gate), Stats()
        r = cfg.result_log
        self.results = ResultLog(r.path, r.max_bytes, r.backups) if r.path else None
        self.publisher = None
        if cfg.mqtt.url:
            from edge.publisher import Publisher

            self.publisher = Publisher(cfg.mqtt, cfg.device_id, self.outbox)
            self.publisher.set_info(self.info())
            self.publisher.start()
        self._next_stats = time.monotonic() + cfg.mqtt.stats_interval_s
        log.info("agent %s: %s on %s, source %s, mqtt %s, outbox backlog %d", cfg.device_id, self.entry.path,
                 self.backend.name, cfg.source.uri, cfg.mqtt.safe_url, self.outbox.rows)

    def build_result(self, rgb, focus: float, probs, **latency) -> dict:
        from edge.messages import result_payload

        m, field = self.manifest, self.samples.field_number()  # may open a sample: first
        frame = {"sha256": hashlib.sha256(rgb.data if rgb.flags.c_contiguous else rgb.tobytes()).hexdigest(),
                 "w": int(rgb.shape[1]), "h": int(rgb.shape[0]), "focus": round(focus, 4)}
        return result_payload(
            msg_id=f"{self.cfg.device_id}-{self.boot}-{self.seq}", seq=self.seq, sample_id=self.samples.sample_id,
            field=field, probs=probs, labels=m.labels, refer_below=m.thresholds.refer_below,
            latency_ms=latency, model_sha256=self.entry.sha256, frame=frame)

    def emit(self, kind: str, payload: dict | None) -> None:
        """Outbox first (durable), local log, then hand to MQTT."""
        if payload is None:
            return
        from edge.messages import encode

        t0 = time.perf_counter()
        topic = self.publisher.topic(kind) if self.publisher else f"{self.cfg.mqtt.prefix}/{self.cfg.device_id}/{kind}"
        self.outbox.put(topic, encode(payload))
        if self.results:
            self.results.write(kind, payload)
        t1 = time.perf_counter()
        self._pump()
        self.stats.time("outbox", (t1 - t0) * 1e3)
        self.stats.time("publish", (time.perf_counter() - t1) * 1e3)

    def command(self, cmd) -> None:
        log.info("command %s %s", cmd.name, cmd.sample_id or "")
        if cmd.name == "sample/start":
            self.emit("sample", self.samples.open(cmd.sample_id))
        elif cmd.name == "sample/end":
            self.emit("sample", self.samples.close("command"))
        elif cmd.name == "sample/id":
            self.samples.set_id(cmd.sample_id)

    def info(self) -> dict:
        from leukedge import __version__

        from edge.bundle import MANIFEST, sha256_file
        from edge.messages import SCHEMA, utc_now

        m, cfg = self.manifest, self.cfg
        bundle = {"name": m.name, "arch": m.arch, "format": self.entry.format, "model_sha256": self.entry.sha256,
                  "manifest_sha256": sha256_file(cfg.bundle / MANIFEST)}
        return {"schema": SCHEMA, "device": cfg.device_id, "agent_version": __version__, "boot": self.boot,
                "bundle": bundle, "backend": self.backend.name, "model_file": self.entry.path, "labels": m.labels,
                "thresholds": m.thresholds.model_dump(), "source": cfg.source.uri, "gate": cfg.gate.mode,
                "ts": utc_now()}

    def stats_payload(self) -> dict:
        from edge.messages import SCHEMA, utc_now
        from edge.stats import cpu_temperature

        st, src, pub, ob = self.stats, self.source, self.publisher, self.outbox
        return {"schema": SCHEMA, "ts": utc_now(), "device": self.cfg.device_id,
                "uptime_s": round(time.monotonic() - st.started, 1), "fps": st.fps(), "fields": st.fields,
                "latency_ms": st.percentiles(),
                "outbox": {"backlog": ob.rows, "bytes": ob.bytes, "dropped": ob.dropped, "written": ob.written,
                           "inflight": pub.inflight if pub else 0},
                "frames": {"total": st.frames, "bad": sum(st.bad.values()), **{f"bad_{k}": v for k, v in st.bad.items()}},
                "gate_rejected": dict(self.gate.rejected), "backend": self.backend.name,
                "source": {"uri": self.cfg.source.uri, "state": getattr(src, "state", "open"),
                           "reopens": getattr(src, "reopens", 0), "eofs": getattr(src, "eofs", 0),
                           "failures": getattr(src, "failures", 0), "last_error": getattr(src, "last_error", None)},
                "mqtt": {"connected": bool(pub and pub.connected.is_set()), "connects": pub.connects if pub else 0,
                         "acked": pub.acked if pub else 0, "rejected": pub.rejected if pub else 0,
                         "commands": pub.cmd_ok if pub else 0, "commands_bad": pub.cmd_bad if pub else 0,
                         "commands_retained_ignored": pub.cmd_retained if pub else 0,
                         "last_error": pub.last_error if pub else None},
                "samples_closed": self.samples.closed, "cpu_temp_c": cpu_temperature()}

    def publish_stats(self) -> dict:
        payload = self.stats_payload()
        log.info("stats: %.1f fps, %d fields, backlog %d, dropped %d, bad frames %d, source %s",
                 payload["fps"], payload["fields"], payload["outbox"]["backlog"], payload["outbox"]["dropped"],
                 payload["frames"]["bad"], payload["source"]["state"])
        if self.publisher:
            self.publisher.publish_now("stats", payload)
        return payload

    def shutdown(self) -> None:
        """Close the open sample, wait (bounded) for the backlog to be acknowledged, say `offline`."""
        self.emit("sample", self.samples.close("shutdown"))
        pub = self.publisher
        if pub is not None:
            deadline = time.monotonic() + self.cfg.drain_timeout_s
            while not pub.drained() and time.monotonic() < deadline and self.signals < 2:
                self._pump()
                time.sleep(0.01)
        self.publish_stats()
        if pub is not None:
            pub.stop()
        self.source.close()
        if self.results:
            self.results.close()
        self.outbox.close()
        log.info("agent stopped: %d fields, %d still queued in the outbox", self.stats.fields, self.outbox.rows)

    # ------------------------------------------------------------------ helpers

    def _next_frame(self):
        try:
            return self.source.read()
        except BadFrame as exc:
            self.stats.frames += 1
            self._bad_frame("source", exc)
            return None

    def _bad_frame(self, name: str, exc: BadFrame) -> None:
        text = str(exc)
        reason = next((r for k, r in _BAD_REASONS if k in text), "other")
        self.stats.bad[reason] += 1
        log.warning("bad frame skipped (%s): %s", reason, text)

    def _pump(self) -> None:
        if self.publisher is not None:
            self.publisher.pump()

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


_BAD_REASONS = (("grayscale", "grayscale"), ("dtype", "bit_depth"), ("empty", "empty"), ("not a decodable", "corrupt"),
                ("cannot read", "unreadable"), ("too small", "too_small"), ("shape", "shape"))
