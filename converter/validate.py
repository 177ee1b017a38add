"""The validation table: every bundle format on the same images, against the float Keras model.

Each format runs through the edge box's own backends (LiteRT for TFLite, onnxruntime for
ONNX), one frame at a time exactly as the agent feeds them, so the latency column is the
agent's `invoke` and the accuracy column is what the box will do. The rows carry the keys
of BUNDLE/validation.json (docs/contracts.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.backends import open_backend
from edge.errors import LeukedgeError
from edge.formats import BACKEND_FOR, INT8_FORMATS
from edge.manifest import LABELS
from edge.postprocess import dihedral, postprocess
from trainer.progress import frames
from trainer.report import classification_report


def predict_keras(model, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Float probabilities of the Keras model (batched, inference mode)."""
    out = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(LABELS)), np.float32)


def run_format(path: Path, fmt: str, x: np.ndarray, warmup: int = 3, tta: bool = False) -> tuple[np.ndarray, float]:
    """(probs (N,C), median invoke ms) of one model file through the edge backend for `fmt`.

    With tta, every field runs as the agent runs it with dihedral TTA: (N, 8, C) passes,
    and the latency is per field (all eight invokes). A bar in a terminal (`frames`)."""
    backend = open_backend(path, fmt, name=BACKEND_FOR[fmt], threads=None, allow_fallback=False)
    try:
        for i in range(min(warmup, len(x))):
            backend.infer(x[i])
        probs, times = [], []
        for frame in frames(x, f"{fmt}{' x8 TTA' if tta else ''}"):
            t0 = time.perf_counter()
            probs.append(np.stack([backend.infer(v) for v in dihedral(frame)]) if tta else backend.infer(frame))
            times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        backend.close()
    if not probs:
        return np.zeros((0, 8, len(LABELS)) if tta else (0, len(LABELS)), np.float32), 0.0
    return np.stack(probs).astype(np.float32), float(np.median(times))


def run_features(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """(N, d) penultimate features of one model file (its second output) through the edge backend for `fmt`."""
    backend = open_backend(path, fmt, name=BACKEND_FOR[fmt], threads=None, allow_fallback=False)
    try:
        if not backend.features_dim:
            raise LeukedgeError(f"{path.name}: has no features output")
        return np.stack([backend.infer_with_features(frame)[1]
                         for frame in frames(x, f"{fmt} features")]).astype(np.float32)
    finally:
        backend.close()


def box_columns(y, probs: np.ndarray, passes: np.ndarray | None, params) -> dict:
    """The columns that say what the box decides: raw ECE, accuracy with TTA, and after `postprocess`.

    `accuracy` stays the plain argmax of one pass; `accuracy_box`/`ece_box` apply the
    manifest's post-processing (TTA passes when it says dihedral) exactly as the agent does."""
    from trainer.calibrate import box_metrics
    from trainer.report import expected_calibration_error

    y = np.asarray(y)
    out = {"ece": expected_calibration_error(y, probs) if len(y) else None,
           "accuracy_tta": float(np.mean(passes.mean(1).argmax(1) == y)) if passes is not None and len(y) else None}
    if params.tta == "dihedral" and passes is None:  # not measured with TTA: say so, do not guess
        return out | {"accuracy_box": None, "ece_box": None}
    box = box_metrics(y, postprocess(passes if params.tta == "dihedral" else probs[:, None], params))
    return out | {"accuracy_box": box["accuracy_box"], "ece_box": box["ece_box"]}


def summarize(y: np.ndarray, probs: np.ndarray, labels: Sequence[str] = LABELS) -> dict:
    """accuracy, per-class recall and precision, n (the manifest's per-format metrics)."""
    rep = classification_report(np.asarray(y), np.asarray(probs), list(labels))
    per = rep["per_class"]
    return {
        "accuracy": float(rep["accuracy"]),
        "per_class_recall": {lab: float(per[lab]["recall"]) for lab in labels},
        "per_class_precision": {lab: float(per[lab]["precision"]) for lab in labels},
        "n": int(len(y)),
    }


def row(fmt: str, path: Path, y, probs, ref_probs, latency_ms: float | None, labels=LABELS) -> dict:
    """One validation.json entry (keys of docs/contracts.md) for a format's probabilities."""
    row = {"format": fmt, "path": path.name, "size_bytes": path.stat().st_size}
    if probs is None:
        return row | {"accuracy": None, "per_class_recall": None, "agreement": None,
                      "max_prob_diff": None, "latency_ms_p50": None}
    s = summarize(y, probs, labels)
    agree = float(np.mean(probs.argmax(1) == ref_probs.argmax(1))) if ref_probs is not None else None
    diff = float(np.max(np.abs(probs - ref_probs))) if ref_probs is not None else None
    return row | {"accuracy": s["accuracy"], "per_class_recall": s["per_class_recall"], "agreement": agree,
                  "max_prob_diff": diff, "latency_ms_p50": latency_ms}


def validation_table(validation: dict, labels: Sequence[str] = LABELS) -> str:
    """The table as text: one line per format, accuracy drop against the reference."""
    ref = validation.get("float_accuracy")
    ref_name = validation.get("reference", "float Keras")
    short = [lab[:5] for lab in labels]
    head = (f"{'format':<15}{'size':>9}{'acc %':>8}{'drop pp':>9}{'agree %':>9}{'max dp':>8}{'p50 ms':>8}"
            f"{'tta %':>8}{'box %':>8}{'ECE %':>7}{'box ECE':>8}  recall % " + " ".join(f"{s:>5}" for s in short))
    lines = [head, "-" * len(head)]
    if ref is not None:
        lines.append(f"{ref_name:<15}{'':>9}{100 * ref:>8.2f}")
    for r in validation["formats"]:
        size = f"{r['size_bytes'] / 1024:.0f}K"
        if r.get("accuracy") is None:
            lines.append(f"{r['format']:<15}{size:>9}  {r.get('note', 'not run on this machine')}")
            continue
        drop = f"{100 * (ref - r['accuracy']):+.2f}" if ref is not None else "-"
        agree = f"{100 * r['agreement']:.2f}" if r.get("agreement") is not None else "-"
        dp = f"{r['max_prob_diff']:.3f}" if r.get("max_prob_diff") is not None else "-"
        recall = " ".join(f"{100 * r['per_class_recall'][lab]:>5.1f}" for lab in labels)
        extra = "".join(f"{_pct(r.get(k)):>{w}}" for k, w in (("accuracy_tta", 8), ("accuracy_box", 8), ("ece", 7),
                                                              ("ece_box", 8)))
        lines.append(f"{r['format']:<15}{size:>9}{100 * r['accuracy']:>8.2f}{drop:>9}{agree:>9}{dp:>8}"
                     f"{r['latency_ms_p50']:>8.2f}{extra}  {'':9}{recall}")
    pp = validation.get("postprocess")
    if pp:
        lines.append(f"box post-processing (fitted on validation): tta {pp['params']['tta']}, temperature "
                     f"{pp['params']['temperature']:.3f}, prior shift {pp['params']['log_prior_shift']}, "
                     f"sample pooling {pp['params']['pool']}")
    split = validation.get("split")
    if split:
        lines.append(f"({split})")
    return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def int8_drops(validation: dict) -> dict[str, float]:
    """Accuracy drop in percentage points against the float model, per int8 format present."""
    ref = validation["float_accuracy"]
    return {r["format"]: 100.0 * (ref - r["accuracy"]) for r in validation["formats"]
            if r["format"] in INT8_FORMATS and r.get("accuracy") is not None}


def write_validation(bundle: Path, validation: dict) -> Path:
    path = Path(bundle) / "validation.json"
    path.write_text(json.dumps(validation, indent=2) + "\n")
    return path
