"""A short microscope video of a slide tray, for testing the edge agent's gate and sample pooling.

One slide is one patient: its fields share a class and a stain, and the next slide
brings another stain. The slides' field canvases, rendered at frame magnification, lie
side by side on one strip. The camera pans from field to field (moving, motion-blurred
frames), hunts for focus on every new slide and on every third field (blurred frames),
then rests about a second on each field (still, sharp frames that differ only by
sensor noise). The live picture carries no scale-bar label: capture software adds
that to saved stills. A JSON sidecar records, for every field, its label, its slide and the
half-open frame range [start, stop) of the still sharp period, and for every slide its
frame range, where a lab system would close one sample and open the next.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge.errors import BadInput, LeukedgeError
from edge.manifest import LABELS
from trainer.synth.fields import N_SESSIONS, render_field, session_seed
from trainer.synth.style import LOOKS, field_stain, illumination, sample_style, session_stain

CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
CANVAS = 1.6         # field canvas width, in frame widths: the pan between fields
STILL_BLUR = 0.5     # optical blur of a focused field, px at 224
FOCUS_BLUR = (8.0, 3.5)  # defocus while hunting, from -> to, px at 224
SENSOR_NOISE = (0.003, 0.008)  # a microscope camera at video rate: quieter than the still fields


def video_plan(slide_of: list[int], fps: int) -> list[tuple[str, int, float, float]]:
    """Frame list (kind, field, position 0..n_fields-1 along the strip, defocus px at 224).

    Every field: a pan from the previous one (`moving`; a slide change takes a second),
    a focus hunt (`blurred`) on a new slide and on every third field, then `fps` frames of `still`.
    """
    n_pan, n_focus = max(4, fps // 2), max(4, fps // 2)
    frames: list[tuple[str, int, float, float]] = []
    for k, slide in enumerate(slide_of):
        new_slide = k == 0 or slide != slide_of[k - 1]
        start = k - 1.0 if k else -0.3
        pan = max(n_pan, fps) if new_slide and k else n_pan
        for i in range(1, pan + 1):
            t = i / (pan + 1)
            frames.append(("moving", k, start + (k - start) * t * t * (3 - 2 * t), STILL_BLUR))
        if (new_slide and k) or k % 3 == 1:
            for i in range(n_focus):
                frames.append(("blurred", k, float(k), FOCUS_BLUR[0] + (FOCUS_BLUR[1] - FOCUS_BLUR[0]) * i / n_focus))
        frames += [("still", k, float(k), STILL_BLUR)] * fps
    return frames


def write_video(path: Path, n_fields: int = 8, size: int = 320, seed: int = 0, fps: int = 15,
                labels=None, per_slide: int = 2, look: str = "all") -> dict:
    """Write the video (.mp4 with mp4v or .avi with MJPG) and `<path>.json`; return that metadata.

    Fields come `per_slide` to a slide (the last slide may have fewer); `labels` gives one
    class per slide, by default the classes in a seeded order.
    """
    path = Path(path)
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise BadInput(f"synth: video {path} must end in .mp4 or .avi")
    if n_fields < 1 or size < 32 or fps < 1 or per_slide < 1:
        raise BadInput("synth: video needs fields >= 1, size >= 32, fps >= 1 and fields per slide >= 1 "
                       f"(got {n_fields}, {size}, {fps}, {per_slide})")
    if look not in LOOKS:
        raise BadInput(f"synth: unknown look {look!r} (expected one of {', '.join(LOOKS)})")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    slide_of = [k // per_slide for k in range(n_fields)]
    n_slides = slide_of[-1] + 1
    if labels is None:
        labels = [LABELS[i] for i in np.resize(rng.permutation(len(LABELS)), n_slides)]
    labels = list(labels)
    bad = [x for x in labels if x not in LABELS]
    if bad or len(labels) != n_slides:
        raise BadInput(f"synth: video labels must be {n_slides} (one per slide) of {', '.join(LABELS)}, got {labels}")

    lk = LOOKS[look]
    camera_style = sample_style(rng, lk)  # one microscope for the whole tray
    camera = illumination(size, camera_style)[..., None]
    noise = float(rng.uniform(*SENSOR_NOISE))
    unit = lk.rbc_radius * size * camera_style["scale"]
    strip = _render_strip(rng, [labels[s] for s in slide_of], slide_of, size, unit, look, seed)
    cw = strip.shape[1] // n_fields
    px = size / 224

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (size, size))
    if not writer.isOpened():
        raise LeukedgeError(f"synth: OpenCV cannot open a {codec} writer for {path}")
    plan = video_plan(slide_of, fps)
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

    fields = [_field_meta(plan, k, labels[s], s) for k, s in enumerate(slide_of)]
    meta = {"video": path.name, "sidecar": str(path) + ".json", "fps": fps, "width": size, "height": size,
            "n_frames": len(plan), "seed": seed, "look": look, "per_slide": per_slide,
            "frame_kinds": [p[0] for p in plan], "fields": fields, "slides": _slides_meta(fields, labels)}
    Path(meta["sidecar"]).write_text(json.dumps({**meta, "sidecar": Path(meta["sidecar"]).name}, indent=1) + "\n")
    return meta


def _render_strip(rng: np.random.Generator, labels: list[str], slide_of: list[int], size: int, unit: float,
                  look: str, seed: int) -> np.ndarray:
    """Field canvases side by side (float32 RGB 0..1, size tall): one stain per slide.

    A slide is stained in one of the capture sessions of the data set made with the same seed
    (`generate_dataset`): the video is the same lab's slides, as a box at the microscope sees."""
    cw = int(round(CANVAS * size))
    clean = {"brightness": 1.0, "vignette": 0.0, "gradient": (0.0, 0.0), "blur": 0.0, "noise": 0.0,
             "scale_bar": False}
    top = (cw - size) // 2
    canvases, slide_stain = [], {}
    for k, (label, slide) in enumerate(zip(labels, slide_of)):
        if k == 0 or slide != slide_of[k - 1]:
            slide_stain = {**session_stain(session_seed(seed, int(rng.integers(N_SESSIONS)))),
                           "rbc_density": sample_style(rng, LOOKS[look])["rbc_density"]}
        n_rbc = int(sample_style(rng, LOOKS[look])["n_rbc"] * (cw / size) ** 2)
        img = render_field(rng, label, cw, look, unit=unit, spread=0.8 * size / cw, n_rbc=n_rbc,
                           **field_stain(rng, slide_stain), **clean)
        canvases.append(img[top:top + size].astype(np.float32) / 255.0)
    return np.hstack(canvases)


def _field_meta(plan: list, k: int, label: str, slide: int) -> dict:
    """Label, slide and half-open frame ranges [start, stop) of one field's moving, blurred and still frames."""
    def span(kind: str):
        idx = [i for i, p in enumerate(plan) if p[0] == kind and p[1] == k]
        return [idx[0], idx[-1] + 1] if idx else None

    return {"field": k, "label": label, "slide": slide, "still": span("still"), "moving": span("moving"),
            "blurred": span("blurred")}


def _slides_meta(fields: list[dict], labels: list[str]) -> list[dict]:
    """Per slide: its class, its fields [first, stop) and frames [start, stop) from the pan onto it to its last still frame."""
    slides = []
    for s, label in enumerate(labels):
        mine = [f for f in fields if f["slide"] == s]
        slides.append({"slide": s, "label": label, "fields": [mine[0]["field"], mine[-1]["field"] + 1],
                       "frames": [mine[0]["moving"][0], mine[-1]["still"][1]]})
    return slides
