"""A short microscope video of consecutive smear fields, for testing the edge agent's gate.

The slide is a strip of wide field canvases rendered at frame magnification with one
stain for the whole slide. The camera pans from field to field (moving, motion-blurred
frames), sometimes hunts for focus (blurred frames), then rests about a second on each
field (still, sharp frames that differ only by sensor noise). A JSON sidecar records,
for every field, its label and the half-open frame range [start, stop) of the still
sharp period, so a test can check that each such field is classified exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.bundle import LABELS
from edge.errors import BadInput, LeukedgeError
from trainer.synth.fields import RBC_RADIUS, illumination, render_field, sample_style

CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
CANVAS = 1.6         # field canvas width, in frame widths: the pan between fields
STILL_BLUR = 0.5     # optical blur of a focused field, px at 224
FOCUS_BLUR = (8.0, 3.5)  # defocus while hunting, from -> to, px at 224
SENSOR_NOISE = (0.003, 0.008)  # a microscope camera at video rate: quieter than the still fields


def video_plan(n_fields: int, fps: int, rng: np.random.Generator) -> list[tuple[str, int, float, float]]:
    """Frame list (kind, field, position 0..n_fields-1 along the strip, defocus px at 224).

    Every field: a pan from the previous one (`moving`), on every third field a focus
    hunt (`blurred`), then `fps` frames of `still`.
    """
    n_pan, n_focus = max(4, fps // 2), max(4, fps // 2)
    frames: list[tuple[str, int, float, float]] = []
    for k in range(n_fields):
        start = k - 1.0 if k else -0.3
        for i in range(1, n_pan + 1):
            t = i / (n_pan + 1)
            frames.append(("moving", k, start + (k - start) * t * t * (3 - 2 * t), STILL_BLUR))
        if k % 3 == 1:
            for i in range(n_focus):
                frames.append(("blurred", k, float(k), FOCUS_BLUR[0] + (FOCUS_BLUR[1] - FOCUS_BLUR[0]) * i / n_focus))
        frames += [("still", k, float(k), STILL_BLUR)] * fps
    return frames


def write_video(path: Path, n_fields: int = 8, size: int = 320, seed: int = 0, fps: int = 15,
                labels=None) -> dict:
    """Write the video (.mp4 with mp4v or .avi with MJPG) and `<path>.json`; return that metadata."""
    import cv2

    path = Path(path)
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise BadInput(f"synth: video {path} must end in .mp4 or .avi")
    if n_fields < 1 or size < 32 or fps < 1:
        raise BadInput(f"synth: video needs n_fields >= 1, size >= 32 and fps >= 1 (got {n_fields}, {size}, {fps})")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    if labels is None:
        labels = [LABELS[i] for i in rng.permutation(np.arange(n_fields) % len(LABELS))]
    labels = list(labels)
    bad = [x for x in labels if x not in LABELS]
    if bad or len(labels) != n_fields:
        raise BadInput(f"synth: video labels must be {n_fields} of {', '.join(LABELS)}, got {labels}")

    slide_style = sample_style(rng)
    camera = illumination(size, slide_style)[..., None]
    noise = float(rng.uniform(*SENSOR_NOISE))
    strip = _render_strip(rng, labels, size, slide_style)
    cw = strip.shape[1] // n_fields
    px = size / 224

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (size, size))
    if not writer.isOpened():
        raise LeukedgeError(f"synth: OpenCV cannot open a {codec} writer for {path}")
    plan = video_plan(n_fields, fps, rng)
    prev_x = None
    try:
        for kind, _k, pos, defocus in plan:
            x = int(round(pos * cw + cw / 2 - size / 2))
            x = min(max(x, 0), strip.shape[1] - size)
            frame = strip[:, x:x + size]
            sigma = defocus * px
            frame = cv2.GaussianBlur(frame, (0, 0), sigma) if sigma > 0.2 else frame.copy()
            if kind == "moving" and prev_x is not None and abs(x - prev_x) > 1:  # motion blur along the pan
                frame = cv2.blur(frame, (min(abs(x - prev_x) // 2 + 1, size // 4), 1))
            prev_x = x
            frame = frame * camera + rng.standard_normal(frame.shape, dtype=np.float32) * noise
            writer.write((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    finally:
        writer.release()

    meta = {"video": path.name, "sidecar": str(path) + ".json", "fps": fps, "width": size, "height": size,
            "n_frames": len(plan), "seed": seed, "frame_kinds": [p[0] for p in plan],
            "fields": [_field_meta(plan, k, label) for k, label in enumerate(labels)]}
    Path(meta["sidecar"]).write_text(json.dumps({**meta, "sidecar": Path(meta["sidecar"]).name}, indent=1) + "\n")
    return meta


def _render_strip(rng: np.random.Generator, labels: list[str], size: int, style: dict) -> np.ndarray:
    """Field canvases side by side (float32 RGB 0..1, size tall): one slide, one stain."""
    cw = int(round(CANVAS * size))
    fixed = {k: style[k] for k in ("hue_deg", "eosin_od", "azure_od", "tint", "rbc_density")}
    clean = {"brightness": 1.0, "vignette": 0.0, "gradient": (0.0, 0.0), "blur": 0.0, "noise": 0.0}
    top = (cw - size) // 2
    canvases = []
    for label in labels:
        img = render_field(rng, label, cw, unit=RBC_RADIUS * size * style["scale"],
                           spread=0.8 * size / cw, **fixed, **clean)
        canvases.append(img[top:top + size].astype(np.float32) / 255.0)
    return np.hstack(canvases)


def _field_meta(plan: list, k: int, label: str) -> dict:
    """Label and half-open frame ranges [start, stop) of one field's moving, blurred and still frames."""
    def span(kind: str):
        idx = [i for i, p in enumerate(plan) if p[0] == kind and p[1] == k]
        return [idx[0], idx[-1] + 1] if idx else None

    return {"field": k, "label": label, "still": span("still"), "moving": span("moving"), "blurred": span("blurred")}
