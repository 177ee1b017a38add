"""`convert`: RUN/model.keras -> a validated bundle directory (DESIGN.md's contract).

Order of work: check the run (model, split, labels) before anything heavy; build every
format into a hidden temporary folder next to OUT; validate all of them on the test split;
apply the int8 accuracy gate; write the manifest last; then rename the folder into place.
A failure at any step removes the temporary folder, so OUT is either the previous bundle
or a complete new one, never half-written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edge.bundle import FORMATS, LABELS, MANIFEST, InputSpec
from edge.errors import BadInput

DEFAULT_FORMATS = ("tflite-int8", "onnx-fp32", "onnx-qdq")
FILE_NAMES = {
    "tflite-int8": "model_int8.tflite", "tflite-fp32": "model_fp32.tflite", "tflite-fp16": "model_fp16.tflite",
    "tflite-edgetpu": "model_int8_edgetpu.tflite", "onnx-fp32": "model_fp32.onnx", "onnx-qdq": "model_qdq.onnx",
}
LAYER_REPORT_IMAGES = 16


class GateFailed(BadInput):
    """An int8 format lost more accuracy than --max-drop allows (exit 2)."""


@dataclass
class Run:
    """A training run folder, checked: the model, its input rule and the data splits."""

    path: Path
    model: object
    spec: InputSpec
    arch: str
    labels: list[str]
    splits: dict
    split_meta: dict
    warnings: list[str] = field(default_factory=list)


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise BadInput(f"--formats: unknown format {unknown[0] if unknown else '(none)'!r} (choose from {', '.join(FORMATS)})")
    if "tflite-edgetpu" in names and "tflite-int8" not in names:
        names.insert(0, "tflite-int8")  # the Edge TPU file is compiled from it, and validated through it
    return tuple(dict.fromkeys(names))


def _detect_arch(run: Path, model) -> str:
    import json

    for name in ("report.json", "train_config.json"):
        try:
            arch = json.loads((run / name).read_text()).get("arch")
        except (OSError, ValueError):
            continue
        if arch in ("mobilenetv2", "custom_cnn"):
            return arch
    names = " ".join(layer.name.lower() for layer in model.layers)
    return "mobilenetv2" if "mobilenet" in names else "custom_cnn"


def load_run(run_dir: Path, data: Path | None = None) -> Run:
    """Check and load a RUN folder; BadInput naming the file for anything a user can fix."""
    from trainer.evaluate import run_stain_norm
    from trainer.split import read_split

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: run folder does not exist")
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise BadInput(f"{model_path}: missing (is {run_dir} a finished training run?)")
    if not (run_dir / "split.json").is_file():
        raise BadInput(f"{run_dir / 'split.json'}: missing; the converter calibrates and validates on the run's own split")
    info = read_split(run_dir, data=data)
    import keras

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad file to the user
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{model_path}: not a loadable Keras model ({msg})") from None
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise BadInput(f"{model_path}: input shape {shape}, expected (None, H, W, 3)")
    dtype = str(model.inputs[0].dtype)
    if "uint8" not in dtype:
        raise BadInput(f"{model_path}: input dtype {dtype}, expected uint8 (scaling belongs inside the model)")
    labels = list(info.meta.get("labels", LABELS))
    n_out = model.output_shape[-1]
    if n_out != len(labels):
        raise BadInput(f"{model_path}: model has {n_out} outputs but split.json lists {len(labels)} labels {labels}")
    spec = InputSpec(height=int(shape[1]), width=int(shape[2]), stain_norm=run_stain_norm(run_dir))
    return Run(run_dir, model, spec, _detect_arch(run_dir, model), labels, info.splits, info.meta)


def load_split(run: Run, name: str, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images of one split with the bundle's own InputSpec (same preprocessing as the box)."""
    from trainer.data import load_images

    items = run.splits.get(name, [])
    if not items:
        raise BadInput(f"{run.path / 'split.json'}: the {name} split is empty")
    x, y, bad = load_images(items, run.spec.height, progress=progress, stain=run.spec.stain_norm)
    if bad:
        run.warnings.append(f"{name} split: {len(bad)} unreadable images skipped (first: {bad[0][0]}: {bad[0][1]})")
    if len(x) == 0:
        raise BadInput(f"{run.path / 'split.json'}: no readable images in the {name} split")
    return x, y


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished bundle into place, replacing an older bundle (never an unrelated folder)."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
            raise BadInput(f"{out}: exists and is not a bundle; choose another --out")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def convert(run_dir, out, formats=DEFAULT_FORMATS, calib: int = 300, data=None, max_drop: float = 0.5,
            qat: bool = False, allow_cpu_fallback: bool = False, name: str | None = None, seed: int = 0,
            progress: bool = True, echo: Callable[[str], None] = print) -> Path:
    """Convert RUN into a validated bundle at `out` and return its path (see module docstring).

    Raises BadInput (exit 2) for bad input and GateFailed (exit 2) when an int8 format
    drops more than `max_drop` percentage points against the float model; in that case the
    table is printed and the rejected bundle is kept at OUT.rejected for inspection.
    """
    from converter import build

    formats = parse_formats(formats)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BadInput(f"{out}: exists and is not a bundle; choose another --out")
    run = load_run(Path(run_dir), Path(data) if data else None)
    echo(f"run {run.path}: {run.arch} {run.spec.height}x{run.spec.width}, formats {', '.join(formats)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result = build.build_bundle(run, tmp, formats, calib=calib, max_drop=max_drop, qat=qat,
                                    allow_cpu_fallback=allow_cpu_fallback, name=name or out.name,
                                    seed=seed, progress=progress, echo=echo)
        if result.failing:
            rejected = out.with_name(f"{out.name}.rejected")
            shutil.rmtree(rejected, ignore_errors=True)
            os.replace(tmp, rejected)
            worst = ", ".join(f"{f} {d:+.2f} pp" for f, d in result.failing.items())
            raise GateFailed(f"int8 accuracy drop over --max-drop {max_drop} pp ({worst}); "
                             f"bundle not written, inspect {rejected}")
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"bundle written: {out}")
    return out
