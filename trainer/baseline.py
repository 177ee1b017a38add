"""The colour-statistics baseline: the floor a deep model must clearly beat.

A gradient-boosted tree on nothing but global colour (mean and standard deviation
of R, G and B, and an 8-bin histogram per channel) sees no shape at all. On the
public ALL set it scores about 99 %: staining and acquisition batches line up with
the classes. A deep model that does not clearly beat it has not shown that it
learned morphology, and may fail in the next lab with another stain. Every report
carries `baseline_accuracy` and `beats_baseline` (percentage points).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

HIST_BINS = 8


def color_features(x: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 30) float: per channel mean, std (0..1) and an 8-bin histogram (fractions)."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {x.dtype} {x.shape}")
    n = len(x)
    flat = x.reshape(n, -1, 3)
    feats = np.empty((n, 6 + 3 * HIST_BINS), np.float64)
    pixels = flat.shape[1]
    for i in range(n):  # per image keeps memory flat on large sets
        # Exact integer sums: a float sum's rounding depends on pixel order, which
        # would leak position (shape) into features meant to carry colour alone.
        px = flat[i].astype(np.int64)
        mean = px.sum(axis=0) / pixels
        feats[i, 0:3] = mean / 255.0
        feats[i, 3:6] = np.sqrt(np.maximum((px * px).sum(axis=0) / pixels - mean * mean, 0.0)) / 255.0
        bins = (flat[i] >> 5).astype(np.int64) + np.arange(3) * HIST_BINS  # 256 / 8 = 32 levels per bin
        feats[i, 6:] = np.bincount(bins.ravel(), minlength=3 * HIST_BINS) / pixels
    return feats


def min_leaf(n: int, n_classes: int) -> int:
    """Trees' smallest leaf: scikit-learn's 20, or one class's share of a small training set. With 20,
    a tree on 10 labelled images per class cannot split at all and the baseline calls every image one
    class, so a model would "beat" a baseline that never looked at colour. Smaller leaves than that
    fit noise in the histogram (a separable toy set fell from 100 to 92 % at leaves of 5)."""
    return max(2, min(20, n // max(1, n_classes)))


def fit_color_baseline(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """A HistGradientBoostingClassifier fitted on colour_features(x).

    One OpenMP thread: on 30 features the fit takes seconds, and next to a training
    process (or other jobs) a multi-threaded fit spends ten times longer spin-waiting.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier  # heavy: start-up cost

    y = np.asarray(y)
    leaf = min_leaf(len(y), len(np.unique(y)))
    with threadpool_limits(1):
        return HistGradientBoostingClassifier(random_state=seed, min_samples_leaf=leaf).fit(color_features(x), y)


def predict_color_baseline(clf, x: np.ndarray) -> np.ndarray:
    with threadpool_limits(1):
        return clf.predict(color_features(x))


def baseline_accuracy(x_train, y_train, x_test, y_test, seed: int = 0) -> float:
    """Fit on the training split, score on the test split (a fraction 0..1)."""
    if len(x_test) == 0:
        return 0.0
    clf = fit_color_baseline(x_train, y_train, seed)
    return float((predict_color_baseline(clf, x_test) == np.asarray(y_test)).mean())


def compare(report: dict, base_acc: float) -> dict:
    """Add baseline_accuracy and beats_baseline (points) to a report, in place; returns it."""
    report["baseline_accuracy"] = float(base_acc)
    report["beats_baseline"] = round((report["accuracy"] - base_acc) * 100.0, 2)
    return report
