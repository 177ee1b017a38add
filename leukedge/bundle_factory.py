"""Small real training runs and bundles for the tests and the benchmarks, built once per process.

`make_small_run` trains a tiny model with the real trainer (`trainer.train.train`) on a
procedural synthetic data set; `make_small_bundle` converts such a run with the real
converter. Both cache their result for the whole process (a pytest run) (keyed by the arguments)
and hand each caller its own copy under `tmp_path`, so a test may modify or corrupt what
it gets without disturbing other tests.

The bundle is converted with the accuracy gate off (max_drop=100): a model trained for a
couple of epochs on a few dozen images is close to chance and its int8 drop says nothing.
Tests of the gate itself call `converter.convert.convert` directly.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from converter.convert import convert
from trainer.synth.fields import generate_dataset
from trainer.train import TrainConfig, train

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_ROOT: Path | None = None
_RUNS: dict[tuple, Path] = {}
_BUNDLES: dict[tuple, Path] = {}
_DATA: dict[tuple, Path] = {}


def _cache_root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="leukedge-factory-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def _copy(src: Path, tmp_path: Path, name: str) -> Path:
    dst = Path(tmp_path) / name
    k = 1
    while dst.exists():
        k += 1
        dst = Path(tmp_path) / f"{name}-{k}"
    shutil.copytree(src, dst)
    return dst


def small_dataset(per_class: int = 16, size: int = 64, seed: int = 0) -> Path:
    """A cached synthetic ALL-layout folder (trainer.synth.fields.generate_dataset)."""
    key = (per_class, size, seed)
    if key not in _DATA:
        out = _cache_root() / f"data-{per_class}-{size}-{seed}"
        generate_dataset(out, per_class=per_class, size=size, seed=seed, progress=False)
        _DATA[key] = out
    return _DATA[key]


def make_small_run(tmp_path: Path, arch: str = "custom_cnn", size: int = 64, per_class: int = 16,
                   epochs: int = 2, alpha: float = 0.35, smote: bool = False, seed: int = 0) -> Path:
    """A copy of a real training RUN folder (model.keras, split.json, report.json, train_config.json)."""
    key = (arch, size, per_class, epochs, alpha, smote, seed)
    if key not in _RUNS:
        data = small_dataset(per_class, size, seed)
        run = _cache_root() / f"run-{'-'.join(map(str, key))}"
        train(TrainConfig(data=str(data), out=str(run), arch=arch, epochs=epochs, img_size=size, batch=16,
                          weights="none", alpha=alpha, smote=smote, seed=seed, verbose=0, workers=1,
                          bn_recal_images=64, patience=epochs))
        _RUNS[key] = run
    return _copy(_RUNS[key], tmp_path, f"run-{arch}-{size}")


def make_small_bundle(tmp_path: Path, arch: str = "custom_cnn", size: int = 64,
                      formats: tuple[str, ...] = ("tflite-int8", "onnx-fp32", "onnx-qdq"),
                      per_class: int = 16, epochs: int = 2, calib: int = 300, seed: int = 0,
                      guard: bool = True) -> Path:
    """A copy of a bundle converted from `make_small_run(...)` with the real converter (gate off)."""
    key = (arch, size, tuple(formats), per_class, epochs, calib, seed, guard)
    if key not in _BUNDLES:
        run_key = (arch, size, per_class, epochs, 0.35, False, seed)
        if run_key not in _RUNS:
            make_small_run(_cache_root() / "scratch", arch, size, per_class, epochs, seed=seed)
        out = _cache_root() / f"bundle-{len(_BUNDLES)}"
        convert(_RUNS[run_key], out, formats=formats, calib=calib, max_drop=100.0, seed=seed,
                progress=False, echo=lambda _msg: None, guard=guard)
        _BUNDLES[key] = out
    return _copy(_BUNDLES[key], tmp_path, f"bundle-{arch}-{size}")
