"""Assemble BUNDLE/manifest.json (edge.bundle.Manifest) from what the conversion measured.

Also chooses the abstain band: the lowest top-probability threshold at which the accepted
validation predictions are at most 1 % wrong, so `refer` catches the uncertain rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def training_info(run: Path, split_meta: dict) -> dict:
    """What the run says about how the model was trained (report.json, train_config.json, split.json)."""
    info: dict = {}
    for name in ("train_config.json", "report.json"):
        path = run / name
        if path.is_file():
            try:
                info[name] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                info[name] = {}
    cfg, rep = info.get("train_config.json", {}), info.get("report.json", {})

    def pick(key, default=None):
        return rep.get(key, cfg.get(key, default))

    return {
        "dataset_fingerprint": split_meta.get("fingerprint"),
        "split_protocol": split_meta.get("protocol"),
        "split_seed": split_meta.get("seed"),
        "split_counts": split_meta.get("counts"),
        "duplicates_removed": split_meta.get("duplicates_removed"),
        "seed": pick("seed", split_meta.get("seed")),
        "epochs": pick("epochs"),
        "weights": pick("weights"),
        "smote": pick("smote"),
        "img_size": pick("img_size"),
        "test_accuracy_float": rep.get("accuracy"),
    }


def versions() -> dict[str, str]:
    import sys

    from leukedge import __version__

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
                    thresholds=thresholds, training=training, versions=versions(), warnings=warnings, **extra)
