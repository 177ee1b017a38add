"""Classification metrics in the report format every part of the kit shares.

`classification_report` is used by `leukedge train`, `leukedge evaluate` and the
converter's validation, so a number means the same thing wherever it appears.
Pure numpy + scikit-learn: no deep-learning framework needed.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from edge import __version__

ECE_BINS = 15


def classification_report(y_true, probs, labels) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro-F1, confusion matrix, ROC-AUC, ECE.

    y_true: int class indices (N,); probs: (N, C) probabilities in `labels` order.
    Confusion matrix rows are true classes, columns predicted. ROC-AUC is the mean
    one-vs-rest AUC over the classes that have both positives and negatives in
    y_true (None when no class has); `roc_auc_per_class` gives each (None if absent).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(labels)):
        raise ValueError(f"probs shape {probs.shape}, expected ({len(y_true)}, {len(labels)})")
    n = len(y_true)
    idx = list(range(len(labels)))
    y_pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
    if n:
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
        cm = confusion_matrix(y_true, y_pred, labels=idx)
    else:
        p = r = f = np.zeros(len(labels))
        s = np.zeros(len(labels), np.int64)
        cm = np.zeros((len(labels), len(labels)), np.int64)
    per_class = {
        lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, lab in enumerate(labels)
    }
    present = [i for i in idx if s[i] > 0]
    auc_per_class = _auc_per_class(y_true, probs, idx)
    aucs = [a for a in auc_per_class if a is not None]
    return {
        "accuracy": float((y_pred == y_true).mean()) if n else 0.0,
        "labels": labels,
        "per_class": per_class,
        # Macro-F1 over the classes present in y_true: an absent class has no defined recall.
        "macro_f1": float(np.mean([f[i] for i in present])) if present else 0.0,
        "confusion_matrix": cm.astype(int).tolist(),
        "roc_auc_ovr": float(np.mean(aucs)) if aucs else None,
        "roc_auc_per_class": {lab: auc_per_class[i] for i, lab in enumerate(labels)},
        "ece": expected_calibration_error(y_true, probs) if n else 0.0,
        "n": int(n),
    }


def _auc_per_class(y_true, probs, idx) -> list:
    from sklearn.metrics import roc_auc_score

    out = []
    for i in idx:
        positive = y_true == i
        if positive.all() or not positive.any():
            out.append(None)  # AUC undefined without both positives and negatives
        else:
            out.append(float(roc_auc_score(positive, probs[:, i])))
    return out


def expected_calibration_error(y_true, probs, bins: int = ECE_BINS) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    y_true = np.asarray(y_true).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def versions() -> dict[str, str]:
    """Versions of what produced a number (only packages already imported are asked)."""
    out = {"leukedge": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("keras", "tensorflow", "jax", "sklearn"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "__version__"):
            out["scikit-learn" if name == "sklearn" else name] = mod.__version__
    if "keras" in sys.modules:
        out["keras_backend"] = sys.modules["keras"].backend.backend()
    return out


def write_json(path: Path, obj: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def format_table(report: dict) -> str:
    """A short human summary: model next to the colour baseline, per-class recall."""
    acc = report["accuracy"] * 100
    lines = [f"test accuracy {acc:6.2f} %   (n={report.get('n', '?')}, "
             f"split {report.get('split', {}).get('protocol', '?')}, arch {report.get('arch', '?')}, "
             f"weights {report.get('weights', '?')})"]
    base = report.get("baseline_accuracy")
    if base is not None:
        lines.append(f"colour baseline {base * 100:6.2f} %   model beats it by {report['beats_baseline']:+.2f} points")
    near = (report.get("split") or {}).get("near_duplicates")
    if near:
        lines.append(f"duplicates removed {report['split'].get('duplicates_removed', 0)}, near-duplicate groups "
                     f"{near['groups']} ({near['images_in_groups']} images, kept whole in one split)")
    auc = report.get("roc_auc_ovr")
    lines.append(f"macro-F1 {report['macro_f1']:.4f}   ROC-AUC(ovr) {auc if auc is None else round(auc, 4)}   "
                 f"ECE {report['ece']:.4f}")
    pp = report.get("postprocess")
    if pp:
        prm = pp["params"]
        lines.append(f"with dihedral TTA {pp['accuracy_tta'] * 100:6.2f} %   as the box decides (tta {prm['tta']}, "
                     f"T {prm['temperature']:.3f}, prior shift {'on' if prm['log_prior_shift'] else 'off'}) "
                     f"{pp['accuracy_box'] * 100:6.2f} %   ECE {pp['ece_before'] * 100:.2f} % -> {pp['ece_box'] * 100:.2f} %")
        s = pp["samples"]
        m = s[s["chosen"]]
        lines.append(f"samples ({s['slides']} synthetic slides of {s['fields_per_slide']} fields, pooling {s['chosen']}): "
                     f"accuracy {m['accuracy'] * 100:.2f} %, ECE {m['ece'] * 100:.2f} %, refer rate {m['refer_rate'] * 100:.1f} %")
    lines.append(f"{'class':<8} {'recall':>7} {'precision':>9} {'support':>7}")
    for lab in report["labels"]:
        c = report["per_class"][lab]
        lines.append(f"{lab:<8} {c['recall'] * 100:6.1f}% {c['precision'] * 100:8.1f}% {c['support']:>7}")
    for key in ("curves_png", "confusion_png", "reliability_png"):
        if report.get(key):
            lines.append(f"{key.replace('_png', '')}: {report[key]}")
    return "\n".join(lines)
