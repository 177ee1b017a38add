"""Procedural Wright-Giemsa smear fields, written in the ALL data set's layout.

The real ALL images cannot be redistributed, so the kit's demo and tests train on
these fields. The four classes differ in leukocyte morphology (see
`trainer.synth.cells.LEUKOCYTE_TYPES`), while stain, illumination, blur, noise,
magnification, crowding and the scale-bar label are drawn independently of the class,
so colour statistics alone cannot separate them. A data set's fields come from a few
capture sessions with strongly different stains (see `trainer.synth.style`), assigned
regardless of class. `shortcut=True` deliberately breaks that: each class is its own
session, for testing that reports catch a model (or baseline) that learns colour
instead of cells.

Every image has its own child seed `SeedSequence([seed, class, number])`, so a file's
bytes depend only on (seed, class, number, size, look, shortcut), never on generation order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from edge.errors import BadInput
from edge.manifest import LABELS
from trainer.augment import grey_axis_rotations
from trainer.synth.cells import LEUKOCYTE_TYPES, draw_leukocyte, draw_rbcs, place_leukocytes, place_rbcs
from trainer.synth.style import (LOOKS, class_stain, draw_scale_bar, field_stain, illumination, sample_style,
                                 session_stain)

FILE_PREFIX = {
    "Benign": "WBC-Benign",
    "Early": "WBC-Malignant-Early",
    "Pre": "WBC-Malignant-Pre",
    "Pro": "WBC-Malignant-Pro",
}
N_SESSIONS = 6                       # capture sessions per data set (each a stain)
JPEG_QUALITY = 95
MIN_BLUR = 0.3                       # px: optics and the camera never give pixel-sharp polygon edges


class Field(NamedTuple):
    """A rendered field and what was drawn on it (positions in px), for tests that measure it."""

    image: np.ndarray                          # RGB uint8
    rbcs: list[tuple[float, float, float]]     # red cells (x, y, r)
    wbcs: list[tuple[float, float, float]]     # leukocytes (x, y, r)
    azure: np.ndarray                          # azure density before colour: leukocytes only
    rbc: np.ndarray                            # red-cell density before colour


def render_field(rng: np.random.Generator, label: str, size: int, look: str = "all", **style) -> np.ndarray:
    """One smear field (RGB uint8, size x size) showing leukocytes of class `label`."""
    return render(rng, label, size, look, **style).image


def render(rng: np.random.Generator, label: str, size: int, look: str = "all", **style) -> Field:
    """`render_field` with what it drew.

    Any key of `sample_style` may be fixed through `style`; `unit` (red-cell radius in
    px) overrides the size-relative scale and `spread` (0..1) limits where leukocytes
    go, which the video uses to paint a large slide canvas at frame magnification.
    """
    if label not in LEUKOCYTE_TYPES:
        raise BadInput(f"synth: unknown class {label!r} (expected one of {', '.join(LABELS)})")
    if look not in LOOKS:
        raise BadInput(f"synth: unknown look {look!r} (expected one of {', '.join(LOOKS)})")
    lk = LOOKS[look]
    s = sample_style(rng, lk)
    s.update(style)
    unit = s.get("unit") or lk.rbc_radius * size * s["scale"]
    px = unit / (lk.rbc_radius * 224)  # pixels per pixel-at-224: blur scales with magnification
    kind = LEUKOCYTE_TYPES[label]

    rbc = np.zeros((size, size), np.float32)
    azure = np.zeros((size, size), np.float32)
    eosin = np.full((size, size), 0.03, np.float32)  # plasma
    wbcs = place_leukocytes(rng, size, unit, kind, s["n_wbc"], s.get("spread", 1.0), lk.wbc_scale)
    rbcs = place_rbcs(rng, size, unit, s["n_rbc"], wbcs, lk.rbc_size, lk.rbc_gap)
    draw_rbcs(rbc, rng, rbcs, s["rbc_density"])
    for x, y, r in wbcs:
        draw_leukocyte(eosin, azure, rng, x, y, unit, kind, r)
    np.maximum(azure, 0, out=azure)
    leukocytes = azure.copy()
    eosin += rbc * (1 - 0.5 * s["rbc_azure"])  # an alkaline stain turns red cells from pink to grey-lilac
    azure += rbc * (0.8 * s["rbc_azure"])
    np.maximum(eosin, 0, out=eosin)

    od = cv2.transform(cv2.merge([eosin, azure]), np.stack([s["eosin_od"], s["azure_od"]], 1).astype(np.float32))
    img = np.exp(-od) * illumination(size, s)[..., None] * (0.965 + s["tint"]).astype(np.float32)
    img = cv2.transform(img, grey_axis_rotations([s["hue_deg"]])[0].astype(np.float32))
    sigma = max(s["blur"] * px, MIN_BLUR)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.standard_normal(img.shape, dtype=np.float32) * s["noise"]
    img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if s["scale_bar"]:
        draw_scale_bar(img, unit)
    return Field(img, rbcs, wbcs, leukocytes, rbc)


def image_seed(seed: int, label: str, number: int) -> np.random.Generator:
    """The child generator of one image: independent of order and of the other images."""
    return np.random.default_rng(np.random.SeedSequence([seed, LABELS.index(label), number]))


def session_seed(seed: int, session: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5E55, session]))


def image_style(rng: np.random.Generator, label: str, shortcut: bool, seed: int = 0) -> dict:
    """Stain overrides for one data-set image: its capture session's stain, drifted a little.

    The session is drawn from the image's own generator, whatever its class. With
    `shortcut` each class is one session of its own, as when every class of a data set
    was collected on another day.
    """
    if shortcut:
        return {**field_stain(rng, class_stain(label)), "session": LABELS.index(label)}
    session = int(rng.integers(N_SESSIONS))
    return {**field_stain(rng, session_stain(session_seed(seed, session))), "session": session}


def file_name(label: str, number: int) -> str:
    return f"{FILE_PREFIX[label]}-{number:03d}.jpg"


def generate_dataset(out: Path, per_class: int, size: int = 224, seed: int = 0,
                     shortcut: bool = False, progress: bool = True, look: str = "all") -> dict[str, int]:
    """Write out/Original/<Class>/WBC-...-NNN.jpg, `per_class` fields per class; return the counts.

    For a shortcut experiment call it twice: shortcut=True for the training folder and
    shortcut=False with another seed for a decorrelated test folder.
    """
    out = Path(out)
    if per_class < 1:
        raise BadInput(f"synth: --per-class must be at least 1, got {per_class}")
    if size < 32:
        raise BadInput(f"synth: --size must be at least 32 px, got {size}")
    if look not in LOOKS:
        raise BadInput(f"synth: unknown look {look!r} (expected one of {', '.join(LOOKS)})")
    if out.exists() and not out.is_dir():
        raise BadInput(f"synth: output {out} exists and is not a directory")
    total = per_class * len(LABELS)
    bar = _progress(total, progress, f"synth {size}px")
    counts: dict[str, int] = {}
    for label in LABELS:
        folder = out / "Original" / label
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, per_class + 1):
            rng = image_seed(seed, label, number)
            img = render_field(rng, label, size, look, **image_style(rng, label, shortcut, seed))
            path = folder / file_name(label, number)
            if not cv2.imwrite(str(path), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise BadInput(f"synth: cannot write {path}")
            bar.update(1)
        counts[label] = per_class
    bar.close()
    meta = {"generator": "leukedge synth", "seed": seed, "size": size, "per_class": per_class,
            "look": look,
            "sessions": len(LABELS) if shortcut else N_SESSIONS, "shortcut": shortcut, "counts": counts}
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")
    return counts


def _progress(total: int, enabled: bool, desc: str):
    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True, leave=False)  # None: off when not a terminal
