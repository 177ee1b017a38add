"""`leukedge agent`: run the edge agent from a config file and/or flags; `--check` to dry-run it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge.agent import Agent
from edge.argtypes import frame_rate_arg, positive_int
from edge.backends import load_for_manifest
from edge.components import open_guard, sample_threshold_in_force, threshold_in_force
from edge.config import load_config, prune
from edge.errors import BadInput
from edge.manifest import load_manifest
from edge.messages import topic
from edge.publisher import probe
from edge.sources import make_source
from edge.sources.pace import describe, frame_rate
from edge.trust import load_keys, verify_signature


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML or TOML config (see deploy/agent.example.yaml)")
    p.add_argument("--bundle", type=Path, help="bundle directory (overrides `bundle`)")
    p.add_argument("--source", help="picam:, cv:0, /dev/video0, rtsp://..., a video file or an image folder")
    p.add_argument("--loop", action="store_true", default=None, help="replay a file or folder forever")
    p.add_argument("--fps", type=frame_rate_arg, metavar="N|max",
                   help="how fast a file or folder plays: N frames/s, or max (unpaced, for benchmarks); "
                        "default auto: a video at its own frame rate, a looped folder at 2 images/s, "
                        "a folder played once unpaced; cameras and streams are never paced")
    p.add_argument("--mqtt", metavar="URL", help="broker, mqtt://host:1883 or mqtts://host:8883; 'off' runs offline")
    p.add_argument("--device-id", help="device id: topic prefix level and message id prefix")
    p.add_argument("--backend", help="auto, litert, edgetpu, tflite-runtime, onnxruntime[-trt|-cuda|-cpu]")
    p.add_argument("--gate", choices=["still", "continuous"], help="field gate mode")
    p.add_argument("--outbox", help="outbox SQLite file")
    p.add_argument("--result-log", help="local JSON-lines results log")
    p.add_argument("--drain-timeout", type=float, help="seconds to wait for PUBACKs after a finite source ends")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    p.add_argument("--ui", metavar="HOST:PORT|off",
                   help="station page, /healthz, /metrics (default 127.0.0.1:8080; a LAN address needs ui.password_file)")
    p.add_argument("--linger", type=float, metavar="S",
                   help="after a finite source ends, keep the page and MQTT up S seconds (-1: until stopped)")
    p.add_argument("--check", action="store_true",
                   help="validate config and bundle, load the backend, try the broker, print what would run")


def overrides(args) -> dict:
    """The flags that were given, shaped like the config file."""
    return prune({
        "bundle": args.bundle, "device_id": args.device_id, "drain_timeout_s": args.drain_timeout,
        "max_frames": args.max_frames,
        "source": {"uri": args.source, "loop": args.loop, "fps": args.fps},
        "mqtt": {"url": args.mqtt},
        "backend": {"name": args.backend},
        "gate": {"mode": args.gate},
        "outbox": {"path": args.outbox},
        "result_log": {"path": args.result_log},
        "ui": {"listen": args.ui, "linger_s": args.linger},
    })


def run(args) -> int:
    data = overrides(args)
    if args.config is None and args.bundle is None:
        raise BadInput("agent: give --config FILE or at least --bundle DIR")
    cfg = load_config(args.config, data)
    if args.check:
        return check(cfg)
    return Agent(cfg).run()


def check(cfg) -> int:
    """Validate everything a run needs without running it; 0 when all of it works."""
    print(f"config    ok: device {cfg.device_id}, gate {cfg.gate.mode}, outbox {cfg.outbox.path}")
    manifest = load_manifest(cfg.bundle)
    print(f"bundle    ok: {manifest.name} ({manifest.arch}), labels {', '.join(manifest.labels)}, "
          f"{len(manifest.files)} files sha256-verified, {cutoff_words(cfg, manifest)}")
    if cfg.trust.keys:
        key = verify_signature(cfg.bundle, load_keys(cfg.trust.keys))
        print(f"trust     ok: release {manifest.release} signed by {key.fingerprint}; updates into {cfg.store}")
    b = cfg.backend
    backend, entry = load_for_manifest(cfg.bundle, manifest, b.name, b.threads, b.allow_fallback, b.device)
    probs = backend.infer(np.zeros(backend.input_shape, np.uint8))
    print(f"backend   ok: {backend.name} on {entry.path} ({entry.format}), input {backend.input_shape}, "
          f"{probs.shape[0]} outputs")
    guard, why_off = open_guard(cfg.bundle, manifest, backend)  # a tampered guard: exit 2 here, not at start
    print(f"guard     ok: unfamiliar input referred ({guard.section.method}, {guard.section.features_dim} features, "
          f"statistics {', '.join(guard.section.stats)})" if guard else f"guard     off: {why_off}")
    failed = 0
    try:
        src = make_source(cfg.source.uri, cfg.source.width, cfg.source.height, cfg.source.watchdog.stall_s).open()
        try:
            frame = src.read()
        finally:
            src.close()
        pace = describe(*frame_rate(cfg.source.fps, src, cfg.source.loop))
        print(f"source    ok: {cfg.source.safe_uri}{' (loop)' if cfg.source.loop else ''}, plays {pace}")
        print(f"frame     {frame_words(frame, manifest.input.height)}")
    except Exception as exc:  # noqa: BLE001 - report any source failure as one line
        failed += 1
        print(f"source    FAILED: {exc}")
    if cfg.mqtt.url:
        answer = probe(cfg.mqtt, cfg.device_id)
        failed += answer != "ok"
        print(f"broker    {'ok' if answer == 'ok' else 'FAILED'}: {cfg.mqtt.safe_url} topics {topic(cfg.mqtt.prefix, cfg.device_id, '')}"
              + ("" if answer == "ok" else f" ({answer})"))
    else:
        print("broker    off: results stay in the outbox and the local log")
    if cfg.ui.listen:
        from edge.station.server import probe_bind, read_password

        if cfg.ui.password_file:
            read_password(cfg.ui.password_file)  # unreadable or empty: exit 2 naming the file
        answer = probe_bind(cfg.ui)
        failed += answer != "ok"
        auth = "password" if cfg.ui.password_file else "no password (loopback)"
        tls = "https" if cfg.ui.cert_file else "http"
        print(f"page      {'ok' if answer == 'ok' else 'FAILED'}: {tls}://{cfg.ui.listen}/, {auth}"
              + ("" if answer == "ok" else f" ({answer})"))
    else:
        print("page      off")
    print("would run:", "yes" if not failed else "no")
    return 1 if failed else 0


def cutoff_words(cfg, manifest) -> str:
    """The two refer cut-offs in force, in percent, as the technician's page shows them."""
    field, slide = threshold_in_force(cfg, manifest), sample_threshold_in_force(cfg, manifest)
    return f"a field refers below {100 * field:.0f} % confidence, a slide below {100 * slide:.0f} %"


def frame_words(frame, model_px: int) -> str:
    """What one frame becomes on its way into the model: the centre square, shrunk to the input.
    A field much larger than the training fields' scale shrinks cells below what the model saw."""
    if frame is None:
        return "none read: the source opened but gave no frame (check the camera or the file)"
    h, w = frame.image.shape[:2]
    side = min(h, w)
    return (f"{w}x{h}: its centre {side}x{side} square is shrunk {side / model_px:.1f}x to the model's "
            f"{model_px}x{model_px} input (docs/edge.md, camera-size frames)")

