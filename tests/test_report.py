"""Metrics (classification_report, ECE), the colour baseline, report table and plots."""

from __future__ import annotations

import numpy as np
import pytest

from edge.manifest import LABELS
from trainer.baseline import (baseline_accuracy, color_features, compare, fit_color_baseline, min_leaf,
                              predict_color_baseline)
from trainer.report import classification_report, expected_calibration_error, format_table

REPORT_KEYS = {"accuracy", "labels", "per_class", "macro_f1", "confusion_matrix", "roc_auc_ovr", "ece", "n"}


def one_hot(idx, n=4, p=1.0):
    probs = np.full((len(idx), n), (1 - p) / (n - 1))
    probs[np.arange(len(idx)), idx] = p
    return probs


def test_perfect_predictions():
    y = np.array([0, 1, 2, 3, 0, 1])
    r = classification_report(y, one_hot(y), LABELS)
    assert REPORT_KEYS <= set(r)
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0 and r["roc_auc_ovr"] == 1.0
    assert r["confusion_matrix"] == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert r["per_class"]["Benign"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert r["ece"] == pytest.approx(0.0, abs=1e-9)
    assert r["n"] == 6


def test_confusion_rows_are_true_columns_predicted():
    y = np.array([0, 0, 0, 1])
    pred = np.array([0, 2, 2, 1])
    r = classification_report(y, one_hot(pred, p=0.7), LABELS)
    assert r["confusion_matrix"][0] == [1, 0, 2, 0]
    assert r["accuracy"] == 0.5
    assert r["per_class"]["Benign"]["recall"] == pytest.approx(1 / 3)
    assert r["per_class"]["Pre"]["precision"] == 0.0  # predicted twice, never right
    assert r["per_class"]["Pre"]["support"] == 0


def test_absent_classes_do_not_break_auc_or_macro_f1():
    y = np.array([0, 0, 1, 1])  # Pre and Pro absent from y_true
    probs = np.array([[0.9, 0.1, 0, 0], [0.6, 0.4, 0, 0], [0.2, 0.8, 0, 0], [0.7, 0.3, 0, 0]])
    r = classification_report(y, probs, LABELS)
    assert r["roc_auc_per_class"]["Pre"] is None and r["roc_auc_per_class"]["Pro"] is None
    assert r["roc_auc_per_class"]["Benign"] == pytest.approx(0.75)
    assert r["roc_auc_ovr"] == pytest.approx(0.75)
    assert 0 < r["macro_f1"] < 1
    single = classification_report(np.zeros(3, int), one_hot(np.zeros(3, int)), LABELS)
    assert single["roc_auc_ovr"] is None and single["accuracy"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="probs shape"):
        classification_report(np.array([0, 1]), np.ones((3, 4)) / 4, LABELS)


def test_ece_measures_overconfidence():
    y = np.array([0, 1, 0, 1] * 25)
    confident_wrong_half = one_hot(np.array([0, 0, 0, 0] * 25), p=0.97)  # 50 % right at 0.97 confidence
    assert expected_calibration_error(y, confident_wrong_half) == pytest.approx(0.47, abs=1e-6)
    calibrated = one_hot(np.array([0, 0, 0, 0] * 25), p=0.5)
    assert expected_calibration_error(y, calibrated) == pytest.approx(0.0, abs=1e-6)


def test_color_features():
    x = np.zeros((2, 8, 8, 3), np.uint8)
    x[1, :, :, 0] = 255  # second image: pure red
    f = color_features(x)
    assert f.shape == (2, 30)
    assert f[0, :6].tolist() == [0, 0, 0, 0, 0, 0]
    assert f[1, 0] == 1.0 and f[1, 3] == 0.0
    hist_r = f[1, 6:14]
    assert hist_r[-1] == 1.0 and hist_r[:-1].sum() == 0  # all red pixels in the top bin
    assert f[0, 6] == 1.0  # black: bottom bin of R
    assert np.allclose(f[:, 6:].reshape(2, 3, 8).sum(-1), 1.0)
    with pytest.raises(ValueError):
        color_features(np.zeros((2, 8, 8), np.uint8))


def test_baseline_learns_colour_and_fails_without_it():
    """A class that is a colour is easy for the baseline; shape-only classes are not."""
    rng = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 4
    tint = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]], np.uint8)
    x = (tint[y][:, None, None, :] + rng.integers(0, 20, (n, 16, 16, 3))).astype(np.uint8)
    acc = baseline_accuracy(x[:80], y[:80], x[80:], y[80:])
    assert acc == 1.0
    clf = fit_color_baseline(x[:80], y[:80])
    assert (predict_color_baseline(clf, x[80:]) == y[80:]).all()
    # Same colour statistics for every class (a bright square moved around): chance level.
    shapes = np.full((n, 16, 16, 3), 100, np.uint8)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        shapes[i, r * 8:r * 8 + 8, c * 8:c * 8 + 8] = 200
    assert baseline_accuracy(shapes[:80], y[:80], shapes[80:], y[80:]) <= 0.5


def test_baseline_learns_colour_from_a_few_labels_per_class():
    """Seven or eight training images per class (10 labels, a quarter kept for validation):
    scikit-learn's default leaf of 20 could not split at all (every image one class, 25 %);
    the baseline shrinks its leaves to one class's share."""
    rng = np.random.default_rng(1)
    y = np.arange(140) % 4
    tint = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]], np.uint8)
    x = (tint[y][:, None, None, :] + rng.integers(0, 40, (140, 16, 16, 3))).astype(np.uint8)
    assert baseline_accuracy(x[:30], y[:30], x[40:], y[40:]) >= 0.85
    assert min_leaf(40, 4) == 10 and min_leaf(1000, 4) == 20 and min_leaf(6, 4) == 2


def test_compare_and_table():
    y = np.array([0, 1, 2, 3])
    report = compare(classification_report(y, one_hot(y), LABELS), 0.25)
    assert report["baseline_accuracy"] == 0.25 and report["beats_baseline"] == 75.0
    report["split"] = {"protocol": "image"}
    text = format_table(report)
    assert "100.00 %" in text and "25.00 %" in text and "+75.00 points" in text
    for label in LABELS:
        assert label in text


def test_plots_write_pngs(tmp_path):
    from trainer.plots import plot_confusion, plot_history

    history = {"loss": [1.2, 0.8, 0.5], "val_loss": [1.1, 0.9, 0.7], "accuracy": [0.4, 0.6, 0.8],
               "val_accuracy": [0.5, 0.6, 0.7], "phase": ["head", "fine-tune", "fine-tune"], "best_epoch": 3}
    curves = plot_history(history, tmp_path / "curves.png")
    y = np.array([0, 1, 2, 3])
    cm = plot_confusion(classification_report(y, one_hot(y), LABELS), tmp_path / "cm.png")
    for path in (curves, cm):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
