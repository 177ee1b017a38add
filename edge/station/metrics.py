"""`/metrics`: the agent's counters in Prometheus text format, through prometheus-client.

Everything is read from the station's latest snapshot at scrape time (a custom collector,
the client library's pattern for exposing counts kept elsewhere), so the counters are the
same numbers the MQTT `stats` message carries and the loop pays nothing per frame for
them beyond a bucket count for `leukedge_invoke_seconds` (edge/station/state.py).

Every labelled counter has a series for each label value it can take from the start (the
running model's classes, `refer`, `insufficient`, every bad-frame and dropped-connection
reason), at 0 until first counted: `rate()` and `increase()` then see the first event,
and a dashboard's panel exists before it. The client's process collector adds `process_*`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

from edge.errors import BAD_FRAME_REASONS
from edge.samples import INSUFFICIENT
from edge.station.gate import DROP_REASONS
from edge.station.state import INVOKE_BUCKETS_S

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MQTT_STATES = ("off", "connected", "down")


class StationMetrics:
    def __init__(self, station):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(station))
        ProcessCollector(registry=self.registry)  # process_* (a custom registry has no default collectors)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector:
    def __init__(self, station):
        self.station = station

    def collect(self):
        yield from self._page()
        s, invoke = self.station.snap, self.station.invoke
        if s is None:  # no snapshot yet (the loop has not ticked since start)
            return
        c, ob, m = s["counts"], s["outbox"], s["model"]
        info = InfoMetricFamily("leukedge", "Device, agent version and the model actually loaded")
        info.add_metric([], {"device": s["device"], "version": s["agent_version"], "model": m["name"],
                             "model_sha256": m["sha256"], "format": m["format"] or "", "backend": m["backend"]})
        yield info
        yield CounterMetricFamily("leukedge_frames_total", "Frames read from the source", value=c["frames"])
        yield CounterMetricFamily("leukedge_fields_total", "Fields classified", value=c["fields"])
        yield CounterMetricFamily("leukedge_unfamiliar_fields_total",
                                  "Fields the unfamiliar-input guard referred (unlike the training data)",
                                  value=c["unfamiliar"])
        labels = list(m["labels"])
        yield _by_label("leukedge_results_total", "Field results by decision", "decision",
                        [*labels, "refer"], c["results"])
        yield _by_label("leukedge_bad_frames_total", "Frames skipped as unusable, by reason", "reason",
                        BAD_FRAME_REASONS, c["bad_frames"])
        counts, total = invoke
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, INVOKE_BUCKETS_S), "+Inf"), counts):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("leukedge_invoke_seconds", "Model invoke time per classified field",
                                    buckets=buckets, sum_value=total)
        yield _by_label("leukedge_samples_total", "Samples (slides) closed, by decision", "decision",
                        [*labels, "refer", INSUFFICIENT], c["samples"])
        yield GaugeMetricFamily("leukedge_last_field_timestamp_seconds",
                                "Unix time of the last classified field (0 before the first)",
                                value=c["last_field_unix"] or 0.0)
        yield GaugeMetricFamily("leukedge_outbox_backlog", "Messages waiting in the outbox", value=ob["backlog"])
        yield GaugeMetricFamily("leukedge_outbox_oldest_age_seconds", "Age of the oldest queued message",
                                value=ob["oldest_age_s"] or 0.0)
        yield CounterMetricFamily("leukedge_outbox_dropped_total", "Messages dropped from a full outbox",
                                  value=ob["dropped"])
        yield GaugeMetricFamily("leukedge_outbox_in_memory", "Messages held in memory while the disk refuses writes",
                                value=ob["in_memory"])
        yield GaugeMetricFamily("leukedge_disk_write_failing", "1 while the outbox or the results log cannot write",
                                value=int(bool(ob["disk_error"] or ob["result_log_error"])))
        yield GaugeMetricFamily("leukedge_mqtt_connected", "1 while connected to the broker",
                                value=int(s["mqtt"]["connected"]))
        mqtt = GaugeMetricFamily("leukedge_mqtt_state", "1 for the MQTT link's state: off (by configuration), "
                                 "connected, or down (a broker configured but not reachable)", labels=["state"])
        for state in MQTT_STATES:
            mqtt.add_metric([state], int(s["mqtt"]["state"] == state))
        yield mqtt
        yield GaugeMetricFamily("leukedge_camera_up", "1 while the source is open",
                                value=int(s["camera"]["state"] == "open"))
        if ob["disk_free_bytes"] is not None:
            yield GaugeMetricFamily("leukedge_disk_free_bytes", "Free bytes on the outbox's file system",
                                    value=ob["disk_free_bytes"])
        if s["cpu_temp_c"] is not None:
            yield GaugeMetricFamily("leukedge_cpu_temperature_celsius", "SoC temperature", value=s["cpu_temp_c"])

    def _page(self):
        """The page's own defences: wrong passwords and connections the gate dropped, by reason."""
        server = self.station.server
        if server is None:
            return
        yield CounterMetricFamily("leukedge_ui_auth_failures_total", "Wrong page passwords (all clients)",
                                  value=server.backoff.failures)
        yield _by_label("leukedge_ui_connections_dropped_total", "Page connections closed unanswered or refused, "
                        "by reason", "reason", DROP_REASONS, server.gate.dropped)


def _by_label(name: str, doc: str, label: str, known, counts: dict) -> CounterMetricFamily:
    """A counter with one series per known label value (0 until counted), plus any other value counted."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for value in dict.fromkeys([*known, *sorted(counts)]):
        family.add_metric([value], counts.get(value, 0))
    return family
