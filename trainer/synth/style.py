"""Everything about a field except its cells: framing (a `Look`), stain, light and camera.

Two looks. `all` frames a field like the public ALL set, measured on it: 224 px fields,
red cells about 14-20 px across and 60-150 of them, touching and overlapping, 1-15
leukocytes of about 25-45 px, and a small scale-bar label bottom-right in most images.
`closeup` is about three times that magnification (a few large red cells, 1-4
leukocytes): the generator's first look, kept for videos that show cells big.

Stain belongs to a capture session. In the ALL set sessions differ strongly (red cells
pale pink-magenta in one, grey-lilac and bluish in another; background pale yellow-white
to lilac) while the fields of one session look alike. `session_stain` draws one session;
which session a field comes from never depends on its class, unless `shortcut` makes
each class its own session, the confound the real set has.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# stain optical density per unit density (R, G, B): eosin absorbs green, azure red and green
EOSIN_OD = np.array([0.25, 0.72, 0.64], np.float32)
AZURE_OD = np.array([0.85, 0.80, 0.30], np.float32)
HUE_RANGE = (-12.0, 30.0)            # session hue rotation, degrees: orange-pink .. magenta .. blue
# background tint (camera white balance and plasma) from pale yellow-white to lilac
YELLOW_WHITE = np.array([0.025, 0.015, -0.05], np.float32)
LILAC = np.array([0.0, -0.05, 0.02], np.float32)
FIELD_HUE_JITTER = 4.0               # +- degrees between fields of one session
FIELD_OD_JITTER = 0.05               # +- fraction of stain strength between fields of one session
# shortcut=True: (hue offset deg, eosin strength, azure strength) per class, all inside the normal ranges;
# red-cell tone and background stay at mid values, so stain normalisation can take the shortcut away
SHORTCUT_STAIN = {"Benign": (-12.0, 1.0, 0.9), "Early": (2.0, 1.1, 1.0), "Pre": (16.0, 0.9, 1.1), "Pro": (30.0, 0.95, 0.95)}
STAIN_KEYS = ("hue_deg", "eosin_od", "azure_od", "rbc_azure", "tint")


@dataclass(frozen=True)
class Look:
    """How a field is framed: magnification, crowding, and what the capture software adds."""

    rbc_radius: float                  # red-cell radius as a fraction of the field width, at scale 1
    scale: tuple[float, float]         # magnification jitter between fields
    rbc_count: tuple[int, int]         # red cells per field
    rbc_size: tuple[float, float]      # radius jitter between red cells
    rbc_gap: float                     # closest red-cell centres, in radii (2 = touching, less = overlapping)
    wbc_scale: float                   # leukocyte radii relative to cells.LEUKOCYTE_TYPES
    wbc_max: int                       # leukocytes per field: 1..wbc_max,
    wbc_decay: float                   # P(n) proportional to wbc_decay ** (n - 1)
    scale_bar_p: float                 # share of fields with a scale-bar label bottom-right


LOOKS: dict[str, Look] = {
    "all": Look(8.5 / 224, (0.86, 1.14), (60, 150), (0.9, 1.1), 1.3, 1.35, 15, 0.8, 0.85),
    "closeup": Look(0.075, (0.78, 1.25), (7, 28), (0.85, 1.12), 1.55, 1.0, 4, 0.66, 0.0),
}


def session_stain(rng: np.random.Generator) -> dict:
    """The stain of one capture session (or one slide): hue, strengths, red-cell tone, background."""
    thickness = rng.uniform(0.65, 1.35)  # smear thickness and staining time scale both stains
    return {
        "hue_deg": float(rng.uniform(*HUE_RANGE)),
        "eosin_od": EOSIN_OD * rng.uniform(0.7, 1.3) * thickness + rng.normal(0, 0.04, 3).astype(np.float32),
        "azure_od": AZURE_OD * rng.uniform(0.7, 1.4) * thickness + rng.normal(0, 0.04, 3).astype(np.float32),
        "rbc_azure": float(rng.uniform(0.0, 0.6)),  # azure taken up by red cells: pink (0) to grey-lilac
        "tint": background_tint(float(rng.uniform(0, 1))) + rng.uniform(-0.01, 0.01, 3).astype(np.float32),
    }


def background_tint(t: float) -> np.ndarray:
    """Camera tint from pale yellow-white (t=0) to lilac (t=1)."""
    return (1 - t) * YELLOW_WHITE + t * LILAC


def field_stain(rng: np.random.Generator, stain: dict) -> dict:
    """One field of a session: the session's stain with the small drift between fields."""
    j = FIELD_OD_JITTER
    return {**stain,
            "hue_deg": stain["hue_deg"] + float(rng.uniform(-FIELD_HUE_JITTER, FIELD_HUE_JITTER)),
            "eosin_od": stain["eosin_od"] * np.float32(rng.uniform(1 - j, 1 + j)),
            "azure_od": stain["azure_od"] * np.float32(rng.uniform(1 - j, 1 + j))}


def class_stain(label: str) -> dict:
    """`shortcut`: the session every field of `label` comes from (all values inside the normal ranges)."""
    hue, eosin, azure = SHORTCUT_STAIN[label]
    return {"hue_deg": hue, "eosin_od": EOSIN_OD * eosin, "azure_od": AZURE_OD * azure,
            "rbc_azure": 0.3, "tint": background_tint(0.5)}


def sample_style(rng: np.random.Generator, look: Look) -> dict:
    """Acquisition and staining conditions for one field, independent of its class."""
    n = np.arange(1, look.wbc_max + 1)
    p = look.wbc_decay ** (n - 1.0)
    return {
        **session_stain(rng),
        "brightness": float(rng.uniform(0.86, 1.02)),
        "vignette": float(rng.uniform(0.0, 0.18)),
        "gradient": rng.uniform(-0.06, 0.06, 2),
        "blur": float(rng.uniform(0.3, 1.3)),          # optical blur sigma, px at 224
        "noise": float(rng.uniform(0.004, 0.02)),       # sensor noise sigma, fraction of full scale
        "n_rbc": int(rng.integers(look.rbc_count[0], look.rbc_count[1] + 1)),
        "rbc_density": float(rng.uniform(0.35, 0.55)),
        "scale": float(rng.uniform(*look.scale)),       # magnification / cell-size jitter
        "n_wbc": int(rng.choice(n, p=p / p.sum())),
        "scale_bar": bool(rng.random() < look.scale_bar_p),
    }


def illumination(size: int, s: dict) -> np.ndarray:
    """Köhler illumination that is not quite even: brightness, vignette and a linear tilt."""
    c = (np.arange(size, dtype=np.float32) - size / 2) / (size / 2)
    yy, xx = c[:, None], c[None, :]
    gx, gy = s["gradient"]
    return s["brightness"] * (1 - s["vignette"] * 0.5 * (xx * xx + yy * yy) + gx * xx + gy * yy)


def draw_scale_bar(img: np.ndarray, unit: float) -> None:
    """The capture software's scale bar bottom-right, in place: a 10 um bar (a red cell is ~7.5 um) and its label."""
    h, w = img.shape[:2]
    length = max(4, int(round(2 * unit * 10 / 7.5)))
    m = max(2, w // 40)
    x1, y = w - m, h - m
    cv2.line(img, (x1 - length, y), (x1, y), (20, 20, 20), max(1, w // 112), cv2.LINE_AA)
    font = 0.28 * w / 224
    if font >= 0.15:
        (tw, th), _ = cv2.getTextSize("10um", cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        cv2.putText(img, "10um", (x1 - (length + tw) // 2, y - m // 2 - 1), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (20, 20, 20), 1, cv2.LINE_AA)
