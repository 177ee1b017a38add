"""The agent's parts, built in one place from its config: what `Agent.start()` runs on.

The order matters: the bundle is checked and the model loaded before the source opens
(a bad bundle fails fast); the outbox comes before the sample pool, whose ids carry the
boot number the outbox keeps. The publisher is built here but started by the agent,
once it can say what it runs (`info`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.backends import Backend, load_for_manifest
from edge.gate import Gate
from edge.manifest import FileEntry, Manifest, bundle_path, load_manifest
from edge.ood import FORMAT as OOD_FORMAT
from edge.ood import Guard
from edge.outbox import Outbox
from edge.pixels import frame_min_side
from edge.publisher import Offline, Publisher
from edge.resultlog import ResultLog
from edge.samples import SamplePool
from edge.sources import Watchdog, open_watchdog
from edge.stats import Stats


@dataclass
class Components:
    bundle: Path  # the folder running: `bundle:` or the store's current one (edge/update.py)
    manifest: Manifest
    entry: FileEntry  # the bundle file the backend runs
    backend: Backend
    source: Watchdog
    outbox: Outbox
    boot: int  # this start's number, kept in the outbox file
    samples: SamplePool
    gate: Gate
    stats: Stats
    results: ResultLog | None  # the local JSON-lines log, when configured
    publisher: Publisher | Offline
    min_side: int  # edge.pixels.frame_min_side for this bundle: set here and at a bundle switch
    guard: Guard | None  # the unfamiliar-input guard of this bundle (None: off, for the reason in guard_off)
    guard_off: str | None


def open_guard(bundle: Path, manifest: Manifest, backend: Backend) -> tuple[Guard | None, str | None]:
    """The bundle's unfamiliar-input guard, or None and why it is off (said in `info` and on the page)."""
    section = manifest.ood
    if section is None:
        return None, "this bundle has no unfamiliar-input guard (converted without one, or before the kit had it)"
    if backend.features_dim != section.features_dim:
        return None, (f"the model file gives {backend.features_dim or 'no'} features, the guard was fitted on "
                      f"{section.features_dim}")
    return Guard.load(section, bundle_path(bundle, manifest.file(OOD_FORMAT)), len(manifest.labels)), None


def threshold_in_force(cfg, manifest: Manifest) -> float:
    """The `refer_below` the box applies: the lab's local threshold (config
    `thresholds.refer_below`) wins over the manifest's."""
    local = cfg.thresholds.refer_below
    return manifest.thresholds.refer_below if local is None else local


def sample_threshold_in_force(cfg, manifest: Manifest) -> float:
    """The slide's cut-off: the lab's local `thresholds.sample_refer_below`, else the manifest's,
    else the field cut-off in force (bundles converted before slides had their own)."""
    for value in (cfg.thresholds.sample_refer_below, manifest.thresholds.sample_refer_below):
        if value is not None:
            return value
    return threshold_in_force(cfg, manifest)


def build_components(cfg, source: Watchdog | None = None, bundle: Path | None = None) -> Components:
    """Everything an `edge.config.AgentConfig` describes; `source` replaces the configured one,
    `bundle` the configured bundle folder."""
    import cv2

    # One OpenCV thread: the loop's resizes and decodes are small and serial, and OpenCV's
    # pool threads otherwise compete with the model's own threads during invoke (measured
    # with benchmarks/bench_agent.py --cv-threads: invoke and throughput suffer).
    cv2.setNumThreads(1)
    bundle = bundle or cfg.bundle
    manifest = load_manifest(bundle)
    b = cfg.backend
    backend, entry = load_for_manifest(bundle, manifest, backend=b.name, threads=b.threads,
                                       allow_fallback=b.allow_fallback, device=b.device)
    min_side = frame_min_side(manifest.input, cfg.gate.analysis_width)
    guard, guard_off = open_guard(bundle, manifest, backend)
    if source is None:
        # A large JPEG decodes reduced (libjpeg's scaled decoding averages as it goes) to no less
        # than the model input and the gate's copy need: a 1280x960 file at 320x240 for a 224 px
        # model; what it saves and how little the model input changes: docs/edge.md.
        source = open_watchdog(cfg.source, min_side=min_side)
    ob, log_cfg = cfg.outbox, cfg.result_log
    outbox = Outbox(ob.path, ob.max_rows, ob.max_bytes, ob.synchronous, ob.memory_rows)
    boot = outbox.next_boot()
    samples = SamplePool(cfg.sample, cfg.device_id, boot, manifest.labels, threshold_in_force(cfg, manifest),
                         entry.sha256, manifest.postprocess.pool, manifest.thresholds.min_fields,
                         sample_threshold_in_force(cfg, manifest))
    results = ResultLog(log_cfg.path, log_cfg.max_bytes, log_cfg.backups, ob.memory_rows) if log_cfg.path else None
    publisher = Publisher(cfg.mqtt, cfg.device_id, outbox) if cfg.mqtt.url else Offline(cfg.mqtt, cfg.device_id)
    return Components(bundle=bundle, manifest=manifest, entry=entry, backend=backend, source=source, outbox=outbox,
                      boot=boot, samples=samples, gate=Gate(cfg.gate), stats=Stats(), results=results, publisher=publisher,
                      min_side=min_side, guard=guard, guard_off=guard_off)
