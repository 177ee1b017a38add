"""Assemble BUNDLE/manifest.json (edge.bundle.Manifest) from what the conversion measured.

Also chooses the abstain band: the lowest top-probability threshold at which the accepted
validation predictions are at most 1 % wrong, so `refer` catches the uncertain rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge import __version__
from edge.bundle import FileEntry, InputSpec, Manifest, Quant, sha256_file

MAX_ACCEPTED_ERROR = 0.01


def choose_refer_below(y: np.ndarray, probs: np.ndarray, max_error: float = MAX_ACCEPTED_ERROR) -> dict:
    """Smallest threshold t such that predictions with top prob >= t are at most `max_error` wrong.

    Candidates are the observed top probabilities (ties accepted or refused together).
    When even the most confident group is too often wrong, t is 1.0: everything is
    referred, and the returned dict says so.
    """
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    n = len(y)
    if n == 0:
        return {"refer_below": 0.5, "max_error_accepted": max_error, "n_val": 0,
                "note": "no validation images: default threshold"}
    top = probs.max(1)
    wrong = probs.argmax(1) != y
    for t in np.unique(top):  # ascending: the first that passes accepts the most
        accepted = top >= t
        err = float(wrong[accepted].mean())
        if err <= max_error:
            return {"refer_below": float(np.float32(t)), "max_error_accepted": max_error, "n_val": n,
                    "val_coverage": float(accepted.mean()), "val_error_accepted": err}
    return {"refer_below": 1.0, "max_error_accepted": max_error, "n_val": n, "val_coverage": 0.0,
            "val_error_accepted": None,
            "note": f"no threshold keeps accepted validation errors <= {max_error:.0%}: every prediction is referred"}


def file_entry(bundle: Path, path: Path, fmt: str, quant_in: Quant | None = None,
               quant_out: Quant | None = None, **extra) -> FileEntry:
    return FileEntry(path=path.name, format=fmt, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                     input_quant=quant_in, output_quant=quant_out, **extra)


def converter_versions() -> dict[str, str]:
    """The manifest's `versions`: the kit and the conversion libraries that were loaded."""
    out = {"leukedge": __version__}
    for name in ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "ai_edge_litert"):
        mod = sys.modules.get(name)
        ver = getattr(mod, "__version__", None) if mod else None
        if ver:
            out[name] = str(ver)
    return out


def build_manifest(name: str, arch: str, labels: list[str], spec: InputSpec, files: list[FileEntry],
                   metrics: dict, thresholds: dict, training: dict, warnings: list[str], **extra) -> Manifest:
    return Manifest(name=name, arch=arch, labels=labels, input=spec, files=files, metrics=metrics,
                    thresholds=thresholds, training=training, versions=converter_versions(), warnings=warnings, **extra)
