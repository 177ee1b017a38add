"""Procedural Wright-Giemsa smear fields at 100x, written in the ALL data set's layout.

The real ALL images cannot be redistributed, so the kit's demo and tests train on
these fields. The four classes differ in leukocyte morphology (see
`trainer.synth.cells.LEUKOCYTE_TYPES`), while stain hue, stain strength, illumination,
blur, noise, magnification and red-cell density are drawn independently of the class,
so colour statistics alone cannot separate them. `shortcut=True` deliberately breaks
that: each class gets its own stain-hue offset, for testing that reports catch a model
(or baseline) that learns colour instead of cells.

Every image has its own child seed `SeedSequence([seed, class, number])`, so a file's
bytes depend only on (seed, class, number, size, shortcut), never on generation order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.bundle import LABELS
from edge.errors import BadInput
from trainer.augment import grey_axis_rotations
from trainer.synth.cells import LEUKOCYTE_TYPES, draw_leukocyte, draw_rbc, place_leukocytes, place_rbcs

FILE_PREFIX = {
    "Benign": "WBC-Benign",
    "Early": "WBC-Malignant-Early",
    "Pre": "WBC-Malignant-Pre",
    "Pro": "WBC-Malignant-Pro",
}
# stain optical density per unit density (R, G, B): eosin absorbs green, azure red and green
EOSIN_OD = np.array([0.25, 0.72, 0.64], np.float32)
AZURE_OD = np.array([0.85, 0.80, 0.30], np.float32)
HUE_RANGE = 36.0                     # hue rotation drawn from +-HUE_RANGE degrees, any class
# shortcut=True: (hue offset deg, eosin strength, azure strength) per class, all inside the normal ranges
SHORTCUT_STAIN = {"Benign": (-27.0, 1.0, 0.9), "Early": (-9.0, 1.1, 1.0), "Pre": (9.0, 0.9, 1.1), "Pro": (27.0, 0.95, 0.95)}
SHORTCUT_JITTER = 4.0                # +- degrees around the class offset with shortcut=True
RBC_RADIUS = 0.075                   # red-cell radius as a fraction of the field at 1x scale
JPEG_QUALITY = 95
MIN_BLUR = 0.3                       # px: optics and the camera never give pixel-sharp polygon edges


def sample_style(rng: np.random.Generator) -> dict:
    """Acquisition and staining conditions for one field, independent of its class."""
    thickness = rng.uniform(0.65, 1.35)  # smear thickness and staining time scale both stains
    return {
        "hue_deg": float(rng.uniform(-HUE_RANGE, HUE_RANGE)),
        "eosin_od": EOSIN_OD * rng.uniform(0.75, 1.3) * thickness + rng.normal(0, 0.04, 3).astype(np.float32),
        "azure_od": AZURE_OD * rng.uniform(0.75, 1.3) * thickness + rng.normal(0, 0.04, 3).astype(np.float32),
        "brightness": float(rng.uniform(0.86, 1.02)),
        "tint": rng.uniform(-0.03, 0.03, 3).astype(np.float32),
        "vignette": float(rng.uniform(0.0, 0.18)),
        "gradient": rng.uniform(-0.06, 0.06, 2),
        "blur": float(rng.uniform(0.3, 1.3)),          # optical blur sigma, px at 224
        "noise": float(rng.uniform(0.004, 0.02)),       # sensor noise sigma, fraction of full scale
        "rbc_coverage": float(rng.uniform(0.12, 0.5)),
        "rbc_density": float(rng.uniform(0.35, 0.55)),
        "scale": float(rng.uniform(0.78, 1.25)),        # magnification / cell-size jitter
        "n_wbc": int(rng.choice([1, 2, 3, 4], p=[0.45, 0.3, 0.15, 0.1])),
    }


def render_field(rng: np.random.Generator, label: str, size: int, **style) -> np.ndarray:
    """One smear field (RGB uint8, size x size) showing 1-4 leukocytes of class `label`.

    Any key of `sample_style` may be fixed through `style`; `unit` (red-cell radius in
    px) overrides the size-relative scale and `spread` (0..1) limits where leukocytes
    go, which the video uses to paint a large slide canvas at frame magnification.
    """
    import cv2

    if label not in LEUKOCYTE_TYPES:
        raise BadInput(f"synth: unknown class {label!r} (expected one of {', '.join(LABELS)})")
    s = sample_style(rng)
    s.update(style)
    unit = s.get("unit") or RBC_RADIUS * size * s["scale"]
    px = unit / (RBC_RADIUS * 224)  # pixels per pixel-at-224: blur scales with magnification
    kind = LEUKOCYTE_TYPES[label]

    eosin = np.full((size, size), 0.03, np.float32)  # plasma
    azure = np.zeros((size, size), np.float32)
    wbcs = place_leukocytes(rng, size, unit, kind, s["n_wbc"], s.get("spread", 1.0))
    for x, y, r in place_rbcs(rng, size, unit, s["rbc_coverage"], wbcs):
        draw_rbc(eosin, rng, x, y, r, s["rbc_density"] * rng.uniform(0.9, 1.1))
    for x, y, r in wbcs:
        draw_leukocyte(eosin, azure, rng, x, y, unit, kind, r)
    np.maximum(eosin, 0, out=eosin)
    np.maximum(azure, 0, out=azure)

    od = cv2.transform(cv2.merge([eosin, azure]), np.stack([s["eosin_od"], s["azure_od"]], 1).astype(np.float32))
    img = np.exp(-od) * illumination(size, s)[..., None] * (0.965 + s["tint"]).astype(np.float32)
    img = cv2.transform(img, grey_axis_rotations([s["hue_deg"]])[0].astype(np.float32))
    sigma = max(s["blur"] * px, MIN_BLUR)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.standard_normal(img.shape, dtype=np.float32) * s["noise"]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def illumination(size: int, s: dict) -> np.ndarray:
    """Köhler illumination that is not quite even: brightness, vignette and a linear tilt."""
    c = (np.arange(size, dtype=np.float32) - size / 2) / (size / 2)
    yy, xx = c[:, None], c[None, :]
    gx, gy = s["gradient"]
    return s["brightness"] * (1 - s["vignette"] * 0.5 * (xx * xx + yy * yy) + gx * xx + gy * yy)


def image_seed(seed: int, label: str, number: int) -> np.random.Generator:
    """The child generator of one image: independent of order and of the other images."""
    return np.random.default_rng(np.random.SeedSequence([seed, LABELS.index(label), number]))


def image_style(rng: np.random.Generator, label: str, shortcut: bool) -> dict:
    """Style overrides for one data-set image.

    With `shortcut` each class looks stained in its own batch: a class-specific hue
    offset and a nearly fixed stain strength, as when every class of a data set was
    collected in another session. Without it, nothing here depends on the class.
    """
    if not shortcut:
        return {}
    hue, eosin, azure = SHORTCUT_STAIN[label]
    return {"hue_deg": hue + float(rng.uniform(-SHORTCUT_JITTER, SHORTCUT_JITTER)),
            "eosin_od": EOSIN_OD * eosin * float(rng.uniform(0.95, 1.05)),
            "azure_od": AZURE_OD * azure * float(rng.uniform(0.95, 1.05))}


def file_name(label: str, number: int) -> str:
    return f"{FILE_PREFIX[label]}-{number:03d}.jpg"


def generate_dataset(out: Path, per_class: int, size: int = 224, seed: int = 0,
                     shortcut: bool = False, progress: bool = True) -> dict[str, int]:
    """Write out/Original/<Class>/WBC-...-NNN.jpg, `per_class` fields per class; return the counts.

    For a shortcut experiment call it twice: shortcut=True for the training folder and
    shortcut=False with another seed for a decorrelated test folder.
    """
    import cv2

    out = Path(out)
    if per_class < 1:
        raise BadInput(f"synth: --per-class must be at least 1, got {per_class}")
    if size < 32:
        raise BadInput(f"synth: --size must be at least 32 px, got {size}")
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
            img = render_field(rng, label, size, **image_style(rng, label, shortcut))
            path = folder / file_name(label, number)
            if not cv2.imwrite(str(path), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise BadInput(f"synth: cannot write {path}")
            bar.update(1)
        counts[label] = per_class
    bar.close()
    meta = {"generator": "leukedge synth", "seed": seed, "size": size, "per_class": per_class,
            "shortcut": shortcut, "counts": counts}
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")
    return counts


def _progress(total: int, enabled: bool, desc: str):
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)
