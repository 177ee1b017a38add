"""Stain normalisation: map each frame's colours onto statistics fitted on the training split.

Why: a smear classifier that keys on global colour learns the lab's stain and camera
as much as the cells; normalising every frame (training, conversion, box) to one
target removes much of that shortcut. One implementation lives here, in the edge
contract, so the trainer, the converter and the agent normalise identically.

Two methods (see docs/robustness.md):

* ``reinhard`` -- match the per-image mean and standard deviation of OpenCV's 8-bit
  LAB channels to the target. Applied as one 256-entry lookup table per channel, so it
  is uint8 in, uint8 out and costs about two colour conversions per frame.
* ``macenko`` -- estimate the two stain vectors of each image in optical-density space
  (Macenko et al., ISBI 2009), re-express its pixels as stain concentrations and
  rebuild them with the target's stain vectors and maximum concentrations.

numpy and pydantic at import time; OpenCV is imported inside the functions that need it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import BadInput

METHODS: tuple[str, ...] = ("none", "reinhard", "macenko")  # the one list: manifest, trainer and CLI flags

# Reinhard: a channel whose spread is below MIN_STD (8-bit LAB units) is treated as flat,
# and no channel is stretched by more than MAX_GAIN, so a blank or near-white frame is
# shifted towards the target mean rather than having its sensor noise blown up.
MIN_STD = 1.0
MAX_GAIN = 4.0

# Macenko constants, as in the original paper and its common implementations.
IO = 240.0  # transmitted light intensity (white background)
BETA = 0.15  # optical density below which a pixel counts as background
ALPHA = 1.0  # percentile for the robust extreme angles
MIN_TISSUE = 64  # fewer stained pixels than this: leave the image as it is
OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / IO)).astype(np.float32)
OD_MIN = int(np.searchsorted(-OD_LUT, -BETA))  # RGB levels below this are stained (OD > BETA)


class StainNorm(BaseModel):
    """A manifest's `input.stain_norm`: applied after crop/resize (edge.pixels.preprocess_rgb)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal[METHODS] = "none"
    target: dict[str, list[float] | list[list[float]]] = Field(default_factory=dict)


def normalize(rgb: np.ndarray, norm: StainNorm) -> np.ndarray:
    """HxWx3 uint8 RGB -> the same image normalised to ``norm.target`` (uint8 HxWx3)."""
    if norm.method == "none":
        return rgb
    rgb = _check_rgb(rgb)
    if norm.method == "reinhard":
        return _reinhard(rgb, norm.target)
    return _macenko(rgb, norm.target)


def fit_stain_norm(method: str, images: np.ndarray) -> StainNorm:
    """Fit the target statistics of ``method`` on a batch of training images (uint8 N,H,W,3).

    The target is JSON-able (lists of floats) and goes into the bundle manifest's
    ``input.stain_norm``.
    """
    if method not in METHODS:
        raise BadInput(f"stain normalisation {method!r}: expected one of {', '.join(METHODS)}")
    if method == "none":
        return StainNorm(method="none")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise BadInput(f"stain fit: expected a non-empty uint8 (N,H,W,3) batch, got {images.dtype} {images.shape}")
    if method == "reinhard":
        stats = np.array([_lab_stats(_check_rgb(img)) for img in images])  # (N, 2, 3)
        target = {"mean": stats[:, 0].mean(0).tolist(), "std": stats[:, 1].mean(0).tolist()}
    else:
        target = _fit_macenko(images)
    return StainNorm(method=method, target=target)


# --------------------------------------------------------------------------- Reinhard


def _lab_stats(rgb: np.ndarray) -> np.ndarray:
    """(2, 3) array: per-channel mean and standard deviation of the 8-bit LAB image."""
    import cv2

    mean, std = cv2.meanStdDev(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB))
    return np.stack([mean[:, 0], std[:, 0]])


def _reinhard(rgb: np.ndarray, target: dict) -> np.ndarray:
    import cv2

    t_mean, t_std = _target_vector(target, "mean", 3), _target_vector(target, "std", 3)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    mean, std = cv2.meanStdDev(lab)
    gain = np.minimum(t_std / np.maximum(std[:, 0], MIN_STD), MAX_GAIN)
    levels = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip(np.rint((levels - mean[:, 0]) * gain + t_mean), 0, 255).astype(np.uint8)
    lab = cv2.LUT(lab, lut.reshape(256, 1, 3))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


# --------------------------------------------------------------------------- Macenko


def _stain_vectors(od: np.ndarray) -> np.ndarray | None:
    """(3, 2) unit stain vectors (first: the more red-absorbing one) from tissue ODs (P, 3)."""
    if len(od) < MIN_TISSUE:
        return None
    cov = np.cov(od, rowvar=False)
    if not np.all(np.isfinite(cov)):
        return None
    _, vecs = np.linalg.eigh(cov)
    plane = vecs[:, 1:3]  # the two largest eigenvectors span the stain plane
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [ALPHA, 100 - ALPHA])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # Eigenvectors have arbitrary sign; optical densities are positive.
    v1, v2 = v1 * np.sign(v1.sum() or 1.0), v2 * np.sign(v2.sum() or 1.0)
    he = np.stack([v1, v2], axis=1) if v1[0] >= v2[0] else np.stack([v2, v1], axis=1)
    norms = np.linalg.norm(he, axis=0)
    if np.any(norms < 1e-6):
        return None
    return he / norms


def _tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose optical density exceeds BETA in every channel (flat boolean mask)."""
    flat = rgb.reshape(-1, 3)
    return np.maximum(np.maximum(flat[:, 0], flat[:, 1]), flat[:, 2]) < OD_MIN


def _tissue_od(rgb: np.ndarray) -> np.ndarray:
    return OD_LUT[rgb.reshape(-1, 3)[_tissue_mask(rgb)]].astype(np.float64)


def _max_concentrations(od: np.ndarray, he: np.ndarray) -> np.ndarray:
    conc = od @ np.linalg.pinv(he).T  # (P, 2)
    return np.percentile(conc, 99, axis=0)


def _fit_macenko(images: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    per_image = max(1, 200_000 // len(images))  # pool a bounded sample of tissue pixels
    pooled = []
    for img in images:
        od = _tissue_od(_check_rgb(img))
        if len(od) > per_image:
            od = od[rng.choice(len(od), per_image, replace=False)]
        pooled.append(od)
    od = np.concatenate(pooled)
    he = _stain_vectors(od)
    if he is None:
        raise BadInput(
            f"macenko fit: only {len(od)} stained pixels in {len(images)} training images "
            "(are they blank or overexposed?)"
        )
    return {"stain_matrix": he.tolist(), "max_conc": _max_concentrations(od, he).tolist()}


def _macenko(rgb: np.ndarray, target: dict) -> np.ndarray:
    he_ref = np.asarray(target.get("stain_matrix"), dtype=np.float64)
    if he_ref.shape != (3, 2):
        raise BadInput(f"stain_norm.target.stain_matrix: expected 3x2 values, got shape {he_ref.shape}")
    max_ref = _target_vector(target, "max_conc", 2)
    od_all = OD_LUT[rgb.reshape(-1, 3)]
    tissue = od_all[_tissue_mask(rgb)]
    he = _stain_vectors(tissue.astype(np.float64))
    if he is None:  # background only: nothing to re-stain
        return rgb
    to_conc = np.linalg.pinv(he).T.astype(np.float32)
    max_c = np.percentile(tissue @ to_conc, 99, axis=0)
    rescale = (max_ref / np.maximum(max_c, 1e-6)).astype(np.float32)
    od_new = od_all @ (to_conc * rescale) @ he_ref.T.astype(np.float32)
    # Negative optical density means brighter than the background: it saturates at 255 anyway,
    # so cap it where exp() would overflow instead of producing inf.
    out = IO * np.exp(-np.maximum(od_new, -1.0))
    return np.clip(out, 0, 255).astype(np.uint8).reshape(rgb.shape)


# --------------------------------------------------------------------------- input checks


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise BadInput(f"stain normalisation expects an HxWx3 uint8 RGB image, got {got}")
    return np.ascontiguousarray(rgb)


def _target_vector(target: dict, key: str, n: int) -> np.ndarray:
    value = np.asarray(target.get(key, ()), dtype=np.float64)
    if value.shape != (n,) or not np.all(np.isfinite(value)):
        raise BadInput(f"stain_norm.target.{key}: expected {n} finite numbers, got {target.get(key)!r}")
    return value
