"""Controlled stain and acquisition shifts, each at three strengths, for the robustness report.

Each shift imitates one thing that differs between labs or microscopes: a stain
batch that is bluer or redder (hue), a faded or over-developed stain (saturation),
lamp or exposure (brightness), focus (blur), a camera or PACS that re-compresses
(JPEG) and the white balance of the camera (warm, cool). They act on decoded uint8
RGB images before preprocessing, are deterministic (no randomness at all) and grow
monotonically with the strength level 1..3; level 0 is the unchanged image.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import cv2
import numpy as np

from edge.errors import BadInput

LEVELS = (1, 2, 3)


class Shift(NamedTuple):
    name: str
    values: tuple[float, float, float]  # the parameter at levels 1, 2, 3
    unit: str  # what a value means, for tables and plots
    fn: Callable[[np.ndarray, float], np.ndarray]


def _hsv_channel(rgb: np.ndarray, channel: int, lut: np.ndarray) -> np.ndarray:
    """Map one channel of OpenCV's full-range 8-bit HSV (hue 0..255) through a 256-entry LUT."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., channel] = lut[hsv[..., channel]]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def hue_rotation(rgb: np.ndarray, degrees: float) -> np.ndarray:
    steps = int(round(degrees * 256 / 360))
    return _hsv_channel(rgb, 0, ((np.arange(256) + steps) % 256).astype(np.uint8))


def saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    return _hsv_channel(rgb, 1, np.clip(np.rint(np.arange(256) * factor), 0, 255).astype(np.uint8))


def brightness(rgb: np.ndarray, gain: float) -> np.ndarray:
    return cv2.convertScaleAbs(rgb, alpha=gain)


def gaussian_blur(rgb: np.ndarray, sigma_224: float) -> np.ndarray:
    """Blur with sigma given in pixels of a 224 px field, so strength is independent of image size."""
    sigma = sigma_224 * min(rgb.shape[:2]) / 224
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma)


def jpeg(rgb: np.ndarray, quality: float) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode an image")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _white_balance(rgb: np.ndarray, red_gain: float, blue_gain: float) -> np.ndarray:
    lut = np.empty((256, 1, 3), np.uint8)
    levels = np.arange(256)
    for ch, gain in enumerate((red_gain, 1.0, blue_gain)):
        lut[:, 0, ch] = np.clip(np.rint(levels * gain), 0, 255)
    return cv2.LUT(rgb, lut)


def warm(rgb: np.ndarray, amount: float) -> np.ndarray:
    """Lower colour temperature: red up, blue down by `amount` (a fraction)."""
    return _white_balance(rgb, 1 + amount, 1 - amount)


def cool(rgb: np.ndarray, amount: float) -> np.ndarray:
    """Higher colour temperature: blue up, red down by `amount` (a fraction)."""
    return _white_balance(rgb, 1 - amount, 1 + amount)


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("hue", (10.0, 20.0, 40.0), "degrees of hue rotation", hue_rotation),
        Shift("saturation", (0.75, 0.5, 0.25), "saturation factor", saturation),
        Shift("brightness", (0.85, 0.7, 0.55), "exposure gain", brightness),
        Shift("blur", (1.0, 2.0, 4.0), "Gaussian sigma (px at 224)", gaussian_blur),
        Shift("jpeg", (50.0, 20.0, 5.0), "JPEG quality", jpeg),
        Shift("warm", (0.08, 0.16, 0.3), "red +/ blue - gain", warm),
        Shift("cool", (0.08, 0.16, 0.3), "blue +/ red - gain", cool),
    )
}


def apply_shift(rgb: np.ndarray, name: str, level: int) -> np.ndarray:
    """One HxWx3 uint8 RGB image under shift `name` at strength `level` (0 = unchanged, 1..3)."""
    if name not in SHIFTS:
        raise BadInput(f"shift {name!r}: expected one of {', '.join(SHIFTS)}")
    if level == 0:
        return rgb
    if level not in LEVELS:
        raise BadInput(f"shift level {level}: expected 0 or one of {LEVELS}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BadInput(f"shift {name}: expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    shift = SHIFTS[name]
    return shift.fn(np.ascontiguousarray(rgb), shift.values[level - 1])


def apply_to_batch(images: np.ndarray, name: str, level: int) -> np.ndarray:
    """(N,H,W,3) uint8 -> the same batch under one shift (one image at a time, each vectorised)."""
    if level == 0:
        return images
    return np.stack([apply_shift(img, name, level) for img in images])
