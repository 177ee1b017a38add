"""Fit the unfamiliar-input guard (edge/ood.py) at conversion, and say how well it separates.

What familiar looks like comes from the **training split** only: the int8 model's penultimate
features (its second output, so the box pays no second invoke) give class means and one shared
covariance; the image statistics give their ranges. The feature threshold is a quantile of the
**validation split**'s scores. The test split is not used. The report measures the guard on
the validation split and on shifted copies of it that stand for another lab: a strong stain
shift, twice the magnification, blank fields and noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.ood import FILE, METHOD, STAT_GROUPS, Guard, OodSection, StatRegion, group_values, image_stats

QUANTILE = 0.99  # of the validation split's feature scores: about 1 familiar field in 100 referred
Z99 = 2.3263478740408408  # the standard normal's 99th percentile, for the log-normal fit of the scores
MAX_COMPONENTS = 64  # principal directions kept of the shared covariance
STAT_QUANTILE = 0.998  # of the training split's distances, times STAT_MARGIN: the statistics' limit
STAT_MARGIN = 1.5


def features_dim(model) -> int:
    """Width of the model's penultimate features (the input of its classifier layer)."""
    return int(model.layers[-1].input.shape[-1])


def with_features(model):
    """The same Keras model with a second output: the input of its classifier layer (penultimate features)."""
    import keras

    return keras.Model(model.input, [model.output, model.layers[-1].input], name=model.name)


def fit_gaussian(features: np.ndarray, labels: np.ndarray, n_classes: int):
    """Class means and the shared within-class covariance as (directions, variances, rest variance)."""
    f = np.asarray(features, np.float64)
    means = np.stack([f[labels == c].mean(axis=0) if np.any(labels == c) else f.mean(axis=0)
                      for c in range(n_classes)])
    resid = f - means[labels]
    cov = resid.T @ resid / max(len(f) - n_classes, 1)
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    floor = max(float(values[0]) * 1e-6, 1e-12)
    k = int(min(MAX_COMPONENTS, max(1, len(f) // 8), f.shape[1] - 1))
    rest = float(max(values[k:].mean(), floor)) if f.shape[1] > k else floor
    return means, vectors[:, :k], np.maximum(values[:k], floor), rest


def quantile_threshold(scores: np.ndarray) -> float:
    """The validation scores' 99th percentile: the larger of the empirical one and a log-normal fit's.

    A split of a few dozen fields puts its empirical 99th percentile at about its maximum, which
    moves a lot from split to split; the log-normal fit of all the scores is steadier there. On a
    large split the two agree. Taking the larger errs towards referring fewer familiar fields."""
    logs = np.log(np.maximum(np.asarray(scores, np.float64), 1e-12))
    fitted = float(np.exp(logs.mean() + Z99 * logs.std(ddof=1))) if len(logs) > 2 else float("-inf")
    return max(float(np.quantile(scores, QUANTILE)), fitted)


def stat_regions(images: np.ndarray) -> dict[str, StatRegion]:
    """Each statistic group's Gaussian on the training split and a limit a little past its extremes."""
    stats = [image_stats(x) for x in images]
    regions = {}
    for group in STAT_GROUPS:
        values = np.stack([group_values(s, group) for s in stats])
        mean = values.mean(axis=0)
        cov = np.atleast_2d(np.cov(values.T)) + np.eye(values.shape[1]) * 1e-3
        inv = np.linalg.inv(cov)
        diff = values - mean
        dist = np.einsum("ni,ij,nj->n", diff, inv, diff)
        regions[group] = StatRegion(mean=mean.tolist(), inv_cov=inv.tolist(),
                                    limit=float(np.quantile(dist, STAT_QUANTILE) * STAT_MARGIN))
    return regions


def shifted_sets(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Copies of familiar fields as another lab or a wrong setting would show them."""
    from trainer.shifts import hue_rotation

    rng = np.random.default_rng(seed)
    h, w = images.shape[1:3]

    def zoom2(x):
        crop = x[h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2]
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)

    def blank(x):
        return np.broadcast_to(np.median(x.reshape(-1, 3), axis=0).astype(np.uint8), x.shape).copy()

    return {
        "stain": np.stack([hue_rotation(x, 90.0) for x in images]),
        "magnification_2x": np.stack([zoom2(x) for x in images]),
        "blank": np.stack([blank(x) for x in images]),
        "noise": rng.integers(0, 256, images.shape, dtype=np.uint8),
    }


def auroc(familiar: np.ndarray, unfamiliar: np.ndarray) -> float:
    """P(score of an unfamiliar field > score of a familiar one), ties counted half."""
    a, b = np.asarray(familiar, np.float64), np.asarray(unfamiliar, np.float64)
    if not len(a) or not len(b):
        return float("nan")
    order = np.argsort(np.concatenate([a, b]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([a, b])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    for v in np.unique(values):  # average ranks of ties
        tied = order[values == v]
        ranks[tied] = ranks[tied].mean()
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def fit(features_of: Callable[[np.ndarray], np.ndarray], x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray, n_classes: int, out_dir: Path, seed: int = 0) -> OodSection:
    """Fit on the training split, set the threshold on the validation split, write ood.npz, report."""
    f_train = features_of(x_train)
    means, directions, variances, rest = fit_gaussian(f_train, np.asarray(y_train), n_classes)
    path = Guard.save(Path(out_dir) / FILE, means, directions, variances, rest)
    probe = OodSection(method=METHOD, threshold=0.0, quantile=QUANTILE, stats=stat_regions(x_train),
                       features_dim=int(f_train.shape[1]))
    guard = Guard.load(probe, path)
    val_features = features_of(x_val)
    threshold = quantile_threshold(guard.feature_scores(val_features))
    section = probe.model_copy(update={
        "threshold": threshold,
        "fit": {"means_and_covariance": "train split",
                "threshold": f"validation split, quantile {QUANTILE} (the larger of empirical and log-normal)",
                "n_train": int(len(x_train)), "n_val": int(len(x_val)), "components": int(directions.shape[1])},
    })
    guard = Guard(section, means, directions, variances, rest)
    section.report = report(guard, features_of, x_val, val_features, seed)
    return section


def flag_rate(guard: Guard, features: np.ndarray, images: np.ndarray) -> float:
    """Share of fields the box would call unfamiliar: `score_field`, the agent's own rule, field by field."""
    return float(np.mean([guard.score_field(f, x).unfamiliar for f, x in zip(features, images)]))


def report(guard: Guard, features_of, x_val: np.ndarray, val_features: np.ndarray, seed: int = 0) -> dict:
    """Flag rates on the validation split and its shifted copies; AUROC of the feature score alone."""
    val_scores = guard.feature_scores(val_features)
    out = {"validation": {"n": int(len(x_val)), "flag_rate": flag_rate(guard, val_features, x_val)}, "shifted": {}}
    shifted_all = []
    for name, images in shifted_sets(x_val, seed).items():
        features = features_of(images)
        scores = guard.feature_scores(features)
        shifted_all.append(scores)
        out["shifted"][name] = {"n": int(len(images)), "flag_rate": flag_rate(guard, features, images),
                                "auroc_features": auroc(val_scores, scores)}
    out["auroc_features"] = auroc(val_scores, np.concatenate(shifted_all))
    return out
