"""The unfamiliar-input guard: does this field look like what the model was trained on?

A model gives a confident class to anything, including another lab's stain, another
magnification or a field with no white cell. The guard asks two questions of every field
the model classifies, with numbers fitted at conversion on the training split
(converter/ood_fit.py) and stored in the bundle:

1. **Features**: how far the model's penultimate features are from the nearest class, as a
   Mahalanobis distance with one covariance shared by the classes (Lee et al. 2018). The
   covariance is kept as its top `k` principal directions plus one variance for the rest
   (probabilistic PCA), so scoring is a (d x k) projection and four dot products: a few
   microseconds, where a full d x d whitening of MobileNetV2's 1,280 features is not.
2. **Image statistics** that say *why*: the mean CIE Lab colour of the stained nuclei and of
   the background (stain), the typical size of the dark-stained objects (scale: magnification
   or camera) and the Laplacian variance (focus). Each group has a Gaussian region fitted on
   the training split; colours are judged jointly, since a field whose nuclei and background
   each look like some training session can still be a combination none had.

A field is unfamiliar when its feature score passes the threshold (fitted on the validation
split) or any statistic group falls outside its region. `score_field` is the one function the
agent, `leukedge bench` and the converter's report call.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import BundleError

FILE = "ood.npz"
FORMAT = "ood"  # its files[] entry in the manifest (sha256-checked like every bundle file)
METHOD = "mahalanobis-ppca"
ANALYSIS_SIDE = 112  # statistics are taken on at most this many pixels a side (cost, not accuracy)
# The image statistics, in groups; a field outside a group's familiar region names it as the reason.
STAT_GROUPS: dict[str, tuple[str, ...]] = {
    # CIE Lab (OpenCV's 8-bit scale) of the dark-stained pixels (nuclei) and of the rest (background, red cells):
    # a stain, lamp or white balance the model never saw moves these jointly.
    "stain": ("nucleus_l", "nucleus_a", "nucleus_b", "background_l", "background_a", "background_b"),
    "focus": ("focus",),  # log10 of 1 + the variance of the Laplacian
    # log2 of area / boundary (~ radius / 2, px) of the dark-stained objects and of all cells, with focus:
    # a magnification change moves sizes and per-pixel sharpness together; either alone varies too much.
    "scale": ("object_size", "cell_size", "focus"),
}


class StatRegion(BaseModel):
    """Where a group of statistics fell on the training split: a Gaussian and a distance limit."""

    model_config = ConfigDict(extra="forbid")
    mean: list[float]
    inv_cov: list[list[float]]
    limit: float = Field(gt=0, allow_inf_nan=False)  # squared Mahalanobis distance beyond which it is unfamiliar

    @model_validator(mode="after")
    def _square(self) -> "StatRegion":
        n = len(self.mean)
        if not n or len(self.inv_cov) != n or any(len(row) != n for row in self.inv_cov):
            raise ValueError(f"inv_cov must be {n} x {n}, as long as mean")
        if not np.all(np.isfinite(self.arrays()[1])) or not np.all(np.isfinite(self.mean)):
            raise ValueError("mean and inv_cov must be finite numbers")
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, inverse covariance, limit) as arrays, for scoring many fields."""
        return np.asarray(self.mean), np.asarray(self.inv_cov), self.limit


class OodSection(BaseModel):
    """The manifest's `ood` section (absent: the guard is off for this bundle)."""

    model_config = ConfigDict(extra="forbid")
    method: str = Field(pattern=f"^{METHOD}$")  # the arrays are the files[] entry of format "ood"
    threshold: float = Field(allow_inf_nan=False)  # feature score above which a field is unfamiliar
    quantile: float = Field(gt=0, lt=1)  # which quantile of the validation split's scores the threshold is
    stats: dict[str, StatRegion]  # group of STAT_GROUPS -> its familiar region
    features_dim: int = Field(ge=1)
    fit: dict = {}  # where the numbers came from (split, n)
    report: dict = {}  # AUROC and flag rates, for the model card

    @model_validator(mode="after")
    def _known_groups(self) -> "OodSection":
        for group, region in self.stats.items():
            if group not in STAT_GROUPS:
                raise ValueError(f"stats: unknown group {group!r} (known: {', '.join(STAT_GROUPS)})")
            if len(region.mean) != len(STAT_GROUPS[group]):
                raise ValueError(f"stats.{group}: {len(region.mean)} values, the group has {len(STAT_GROUPS[group])}")
        return self


class Verdict(NamedTuple):
    score: float
    threshold: float
    unfamiliar: bool
    reasons: tuple[str, ...]  # "stain", "scale", "focus" from the statistics; empty when only the features say so

    def to_dict(self) -> dict:
        return {"score": round(self.score, 3), "threshold": round(self.threshold, 3),
                "unfamiliar": self.unfamiliar, "reason": self.reasons[0] if self.reasons else None}


def image_stats(x: np.ndarray) -> dict[str, float]:
    """Cheap statistics of one preprocessed field (HxWx3 uint8 RGB) that explain an unfamiliar verdict.

    OpenCV calls on a copy of at most ANALYSIS_SIDE pixels a side, quantiles from one histogram:
    the agent runs this on every classified field (its cost: docs/edge.md)."""
    import cv2  # lazy: edge modules import without OpenCV (start-up time)

    h, w = x.shape[:2]
    scale = 1.0
    if max(h, w) > ANALYSIS_SIDE:
        f = -(-max(h, w) // ANALYSIS_SIDE)
        x = cv2.resize(x, (w // f, h // f), interpolation=cv2.INTER_AREA)
        scale = float(f)
    lab = cv2.cvtColor(x, cv2.COLOR_RGB2LAB)
    gray = np.ascontiguousarray(lab[..., 0])
    cdf = np.cumsum(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel())
    median, bright = (float(np.searchsorted(cdf, q * cdf[-1])) for q in (0.5, 0.95))
    # Dark-stained objects (nuclei): clearly darker than the field's typical brightness. Any cell:
    # darker than the bright plasma between cells. (THRESH_BINARY_INV: 1 where gray <= the level.)
    mask = cv2.threshold(gray, np.ceil(0.75 * median) - 1, 1, cv2.THRESH_BINARY_INV)[1]
    cells = cv2.threshold(gray, np.ceil(0.9 * bright) - 1, 1, cv2.THRESH_BINARY_INV)[1]
    area = cv2.countNonZero(mask)
    nucleus = cv2.mean(lab, mask=mask)[:3] if area else (0.0, 128.0, 128.0)
    background = cv2.mean(lab, mask=1 - mask)[:3] if area < mask.size else nucleus
    sd = float(cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))[1][0, 0])
    names = STAT_GROUPS["stain"]
    return {**dict(zip(names, (float(v) for v in (*nucleus, *background)))),
            "object_size": _log_size(mask, area, scale), "cell_size": _log_size(cells, cv2.countNonZero(cells), scale),
            "focus": float(np.log10(1.0 + sd * sd))}


def _log_size(mask: np.ndarray, area: int, scale: float) -> float:
    """log2 of area / boundary (~ radius / 2 of round objects, in model-input pixels); -8 when there are none."""
    import cv2

    edge = area - cv2.countNonZero(cv2.erode(mask, None))
    return float(np.log2(area / edge * scale)) if edge else -8.0


def group_values(stats: dict[str, float], group: str) -> np.ndarray:
    return np.array([stats[name] for name in STAT_GROUPS[group]])


def guard_state(guard: "Guard | None", why_off: str | None) -> dict:
    """What `info` and the page say about the guard."""
    if guard is None:
        return {"on": False, "why_off": why_off}
    s = guard.section
    return {"on": True, "method": s.method, "threshold": round(s.threshold, 4), "features_dim": s.features_dim,
            "stats": list(s.stats)}


class Guard:
    """The fitted guard of one bundle: class means and the shared covariance, kept small."""

    def __init__(self, section: OodSection, means: np.ndarray, directions: np.ndarray, variances: np.ndarray,
                 rest_variance: float):
        self.section = section
        self.means = np.asarray(means, np.float32)  # (C, d)
        self.directions = np.asarray(directions, np.float32)  # (d, k), orthonormal columns
        self.inv_var = (1.0 / np.asarray(variances, np.float64)).astype(np.float32)  # (k,)
        self.inv_rest = float(1.0 / rest_variance)
        self.mean_proj = self.means @ self.directions  # (C, k)
        self.mean_sq = np.einsum("cd,cd->c", self.means, self.means)  # (C,)
        self.regions = {group: region.arrays() for group, region in section.stats.items()}

    @classmethod
    def load(cls, section: OodSection, path: Path, n_labels: int | None = None) -> "Guard":
        """The guard from its arrays file, or BundleError naming what is wrong with it (it comes from outside)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                means, directions = z["means"], z["directions"]
                variances, rest = z["variances"], z["rest_variance"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise BundleError(f"{path}: not the guard's arrays ({exc})") from None
        d, k = section.features_dim, variances.shape[0] if variances.ndim == 1 else -1
        if (means.ndim != 2 or means.shape[1] != d or (n_labels is not None and means.shape[0] != n_labels)
                or directions.shape != (d, k) or rest.shape != () or not k):
            raise BundleError(f"{path}: arrays of shapes means {means.shape}, directions {directions.shape}, "
                              f"variances {variances.shape} do not fit {d} features")
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(directions)) and np.all(variances > 0)
                and float(rest) > 0):
            raise BundleError(f"{path}: the guard's arrays hold non-finite or non-positive variances")
        return cls(section, means, directions, variances, float(rest))

    @staticmethod
    def save(path: Path, means: np.ndarray, directions: np.ndarray, variances: np.ndarray,
             rest_variance: float) -> Path:
        np.savez(path, means=np.asarray(means, np.float32), directions=np.asarray(directions, np.float32),
                 variances=np.asarray(variances, np.float32), rest_variance=np.float32(rest_variance))
        return path

    def feature_scores(self, features: np.ndarray) -> np.ndarray:
        """Distance to the nearest class per field (features (N, d) or (d,)), per dimension."""
        f = np.atleast_2d(np.asarray(features, np.float32))
        proj = f @ self.directions  # (N, k)
        diff = proj[:, None, :] - self.mean_proj[None]  # (N, C, k)
        inside = np.einsum("nck,k->nc", diff * diff, self.inv_var)
        total_sq = np.einsum("nd,nd->n", f, f)[:, None] - 2.0 * f @ self.means.T + self.mean_sq[None]
        rest = np.maximum(total_sq - np.einsum("nck,nck->nc", diff, diff), 0.0) * self.inv_rest
        return (inside + rest).min(axis=1) / f.shape[1]

    def reasons(self, stats: dict[str, float]) -> tuple[str, ...]:
        """The statistic groups outside their familiar region, in STAT_GROUPS order."""
        out = []
        for group, (mean, inv_cov, limit) in self.regions.items():
            d = group_values(stats, group) - mean
            if d @ inv_cov @ d > limit:
                out.append(group)
        return tuple(out)

    def score_field(self, features: np.ndarray, x: np.ndarray) -> Verdict:
        """The verdict on one field: its features and its preprocessed image."""
        score = float(self.feature_scores(features)[0])
        reasons = self.reasons(image_stats(x))
        threshold = self.section.threshold
        return Verdict(score, threshold, bool(score > threshold or reasons), reasons)
