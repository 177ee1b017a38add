"""Build, validate and describe every format of a bundle inside one (temporary) folder.

Split from convert.py so the orchestration there stays about files and failure, and this
stays about the model: formats -> readiness -> validation -> gate (-> QAT) -> manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from converter import edgetpu, layer_report, manifest_build, model_card, onnx_export, ood_fit, postfit, tflite_export
from converter import qat as qat_mod
from converter.calibration import load_calibration
from converter.validate import (int8_drops, predict_keras, row, run_features, run_format, summarize,
                                validation_table, write_validation)
from edge import ood, selftest
from edge.errors import BadInput
from edge.formats import BACKEND_FOR, FILE_NAMES, PRIMARY_ORDER, run_by
from edge.manifest import write_manifest
from trainer.run import load_split, training_info

LAYER_REPORT_IMAGES = 16
TFLITE_FORMATS = run_by("tflite")  # written by the TFLite converter (the Edge TPU file is compiled from int8)


@dataclass
class BuiltFiles:
    files: dict  # format -> (path, input Quant, output Quant)
    edgetpu: dict | None
    warnings: list[str]


@dataclass
class Result:
    validation: dict
    failing: dict[str, float]
    manifest: object


def build_formats(model, tmp: Path, formats, calib_x: np.ndarray, allow_cpu_fallback: bool,
                  echo: Callable[[str], None]) -> BuiltFiles:
    """Write each requested format into `tmp`; the Edge TPU readiness check rides on the int8 file."""
    files: dict = {}
    warnings: list[str] = []
    et_info = None
    clone = tflite_export.float_clone(model) if any(f in TFLITE_FORMATS for f in formats) else None
    for fmt in formats:
        path = tmp / FILE_NAMES[fmt]
        if fmt in TFLITE_FORMATS:
            echo(f"  {fmt} ...")
            data = tflite_export.to_tflite(clone, fmt.split("-")[1], calib_x)
            path.write_bytes(data)
            files[fmt] = (path, *tflite_export.io_quant(data))
        elif fmt == "onnx-fp32" or (fmt == "onnx-qdq" and "onnx-fp32" not in files):
            echo("  onnx-fp32 ...")
            fp32 = tmp / FILE_NAMES["onnx-fp32"]
            onnx_export.export_fp32(model, fp32)
            if "onnx-fp32" in formats:
                files["onnx-fp32"] = (fp32, None, None)
        if fmt == "onnx-qdq":
            echo("  onnx-qdq ...")
            onnx_export.quantize_qdq(tmp / FILE_NAMES["onnx-fp32"], path, calib_x)
            files[fmt] = (path, None, None)
            if "onnx-fp32" not in formats:
                (tmp / FILE_NAMES["onnx-fp32"]).unlink()
    if "tflite-int8" in files:
        int8_path = files["tflite-int8"][0]
        ready = edgetpu.check_readiness(int8_path.read_bytes())
        et_info = {"readiness": ready.to_dict(), "compiled": False}
        if not ready.ok:
            warnings.append(f"Edge TPU readiness: {len(ready.problems)} problem(s), first: {ready.problems[0]}")
        if "tflite-edgetpu" in formats:
            if edgetpu.compiler_path() is None:
                et_info["reason"] = (f"{edgetpu.COMPILER} not on PATH (it runs on x86-64 Debian/Ubuntu; install "
                                     "edgetpu-compiler and convert again); the int8 file is the compiler's input")
                warnings.append("tflite-edgetpu not compiled: " + et_info["reason"])
            else:
                echo("  tflite-edgetpu (edgetpu_compiler) ...")
                compiled = edgetpu.compile_model(int8_path, tmp)
                if compiled.log_path:
                    compiled.log_path.rename(tmp / "edgetpu_compiler.log")
                et_info.update(compiled.summary())
                if compiled.ops_on_cpu and not allow_cpu_fallback:
                    raise BadInput(f"{int8_path.name}: {compiled.ops_on_cpu} of {compiled.ops_total} ops fall back "
                                   f"to the CPU on the Edge TPU ({compiled.cpu_ops}); use --allow-cpu-fallback to accept")
                files["tflite-edgetpu"] = (compiled.path, *files["tflite-int8"][1:])
    return BuiltFiles(files, et_info, warnings)


def validate(built: BuiltFiles, x: np.ndarray, y: np.ndarray, float_probs: np.ndarray, split_note: str,
             echo: Callable[[str], None] = print):
    """(validation.json dict, {format: probs}) for every built file that runs on this CPU."""
    rows, all_probs = [], {}
    runnable = [fmt for fmt in built.files if fmt in BACKEND_FOR]
    echo(f"validating {', '.join(runnable)} on {len(x)} test images, one frame at a time as the box runs them ...")
    for fmt, (path, _, _) in built.files.items():
        if fmt in BACKEND_FOR:
            probs, p50 = run_format(path, fmt, x)
            all_probs[fmt] = probs
            rows.append(row(fmt, path, y, probs, float_probs, p50))
        else:
            rows.append(row(fmt, path, y, None, None, None) | {"note": "needs an Edge TPU: validated through tflite-int8"})
    validation = {"float_accuracy": summarize(y, float_probs)["accuracy"], "reference": "float Keras",
                  "split": split_note, "n": int(len(y)), "formats": rows}
    return validation, all_probs


def write_selftest(built: BuiltFiles, tmp: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """selftest.npz: a few validation images and every CPU-runnable format's raw outputs on them."""
    images = selftest.pick(x, y, selftest.image_count(x.shape[1], x.shape[2]))
    expected = {fmt: run_format(path, fmt, images, warmup=0)[0]
                for fmt, (path, _, _) in built.files.items() if fmt in BACKEND_FOR}
    return selftest.write(tmp / selftest.FILE, images, expected)


def fit_guard(run, primary: str | None, built: BuiltFiles, x_val: np.ndarray, seed: int, progress: bool,
              echo: Callable[[str], None]):
    """The unfamiliar-input guard from the file the box runs (None when no CPU-runnable file has features)."""
    if primary is None:
        return None
    path = built.files[primary][0]
    x_train, y_train = load_split(run, "train", progress)
    echo(f"fitting the unfamiliar-input guard on the features of {len(x_train)} training images ...")
    section = ood_fit.fit(lambda x: run_features(path, primary, x), x_train, y_train, x_val, len(run.labels),
                          path.parent, seed)
    rep = section.report
    echo(f"unfamiliar-input guard: flags {rep['validation']['flag_rate']:.1%} of the validation split; "
         + ", ".join(f"{k} {v['flag_rate']:.0%}" for k, v in rep["shifted"].items())
         + f"; feature AUROC {rep['auroc_features']:.3f}")
    return section


def build_bundle(run, tmp: Path, formats, calib: int, max_drop: float, qat: bool, allow_cpu_fallback: bool,
                 name: str, seed: int, progress: bool, echo: Callable[[str], None], guard: bool = True) -> Result:
    calib_x, calib_counts, warnings = load_calibration(run.splits.get("train", []), calib, run.spec, seed, progress)
    for w in warnings:
        echo(f"warning: {w}")
    echo(f"calibration: {len(calib_x)} training images {calib_counts}")
    x_test, y_test = load_split(run, "test", progress)
    x_val, y_val = load_split(run, "val", progress)
    float_test = predict_keras(run.model, x_test)
    split_note = (f"test split, n={len(y_test)}, protocol {run.split_meta.get('protocol')}, "
                  f"seed {run.split_meta.get('seed')}")

    model, qat_info = run.model, None
    if guard and ood_fit.features_dim(model) <= len(run.labels):  # the box tells the outputs apart by width
        warnings.append(f"unfamiliar-input guard not fitted: the model's penultimate layer has "
                        f"{ood_fit.features_dim(model)} values, not more than its {len(run.labels)} labels")
        guard = False
    export = ood_fit.with_features if guard else (lambda m: m)  # the guard reads the model's second output
    built = build_formats(export(model), tmp, formats, calib_x, allow_cpu_fallback, echo)
    validation, test_probs = validate(built, x_test, y_test, float_test, split_note, echo)
    failing = {f: d for f, d in int8_drops(validation).items() if d > max_drop}
    if failing and qat:
        echo(f"int8 drop over {max_drop} pp ({failing}); fine-tuning with --qat ...")
        x_train, y_train = load_split(run, "train", progress)
        model, qat_info = qat_mod.finetune(run.model, x_train, y_train, x_val, y_val, seed=seed, echo=echo)
        for path, _, _ in built.files.values():
            path.unlink(missing_ok=True)
        built = build_formats(export(model), tmp, formats, calib_x, allow_cpu_fallback, echo)
        validation, test_probs = validate(built, x_test, y_test, float_test, split_note, echo)
        qat_info["float_accuracy_after"] = summarize(y_test, predict_keras(model, x_test))["accuracy"]
        failing = {f: d for f, d in int8_drops(validation).items() if d > max_drop}

    layers = None
    if "tflite-int8" in built.files:
        layers = layer_report.layer_errors(tflite_export.float_clone(model), calib_x, x_val[:LAYER_REPORT_IMAGES])
        layer_report.write_report(tmp, layers, min(len(x_val), LAYER_REPORT_IMAGES))
        echo(layer_report.format_worst(layers))

    # Post-processing and abstain band from the file the box runs by default (int8 TFLite, else the first format).
    primary = next((f for f in PRIMARY_ORDER if f in built.files), None)
    echo(f"fitting post-processing on {len(x_val)} validation images ...")
    val_probs = run_format(built.files[primary][0], primary, x_val)[0] if primary else predict_keras(model, x_val)
    fit = postfit.fit_box(run, (built.files[primary][0], primary) if primary else None, val_probs, x_val, y_val, echo)
    thresholds = fit.thresholds
    guard_section = fit_guard(run, primary, built, x_val, seed, progress, echo) if guard else None
    echo(f"test split with the eight-pass TTA and post-processing, {len(test_probs)} formats ...")
    postfit.test_columns(built.files, validation, test_probs, x_test, y_test, fit, tmp, thresholds["refer_below"])
    echo(validation_table(validation, run.labels))
    if guard_section is not None:
        validation["unfamiliar_input_guard"] = guard_section.report
    write_validation(tmp, validation)

    all_warnings = list(run.warnings) + warnings + built.warnings
    all_warnings += [n for n in (thresholds.get("note"), fit.info.get("note")) if n]
    metrics = {fmt: summarize(y_test, probs) | {"split": "test", "protocol": run.split_meta.get("protocol")}
               for fmt, probs in test_probs.items()}
    metrics["keras-float"] = summarize(y_test, float_test) | {"split": "test", "protocol": run.split_meta.get("protocol")}
    entries = [manifest_build.file_entry(tmp, path, fmt, qi, qo) for fmt, (path, qi, qo) in built.files.items()]
    entries.append(manifest_build.file_entry(tmp, write_selftest(built, tmp, x_val, y_val), "selftest"))
    if guard_section is not None:
        entries.append(manifest_build.file_entry(tmp, tmp / ood.FILE, ood.FORMAT))
    reports = [{"path": p.name, "sha256": manifest_build.sha256_file(p)}
               for p in sorted(tmp.glob("*.json")) + sorted(tmp.glob("*.log")) + sorted(tmp.glob("*.png"))]
    manifest = manifest_build.build_manifest(
        name=name, arch=run.arch, labels=run.labels, spec=run.spec, files=entries, metrics=metrics,
        thresholds=thresholds, training=training_info(run),
        warnings=all_warnings,
        calibration={"images": len(calib_x), "requested": calib, "per_class": calib_counts, "source": "train split",
                     "seed": seed, "balanced": True, "input_range_pinned": [0, 255]},
        edgetpu=built.edgetpu, qat=qat_info, reports=reports, postprocess=fit.params,
        gate={"max_drop_pp": max_drop, "int8_drop_pp": int8_drops(validation), "passed": not failing},
        ood=guard_section,
    )
    card = model_card.write(tmp, manifest, validation, run.path)
    manifest.reports.append({"path": card.name, "sha256": manifest_build.sha256_file(card)})
    write_manifest(tmp, manifest)
    return Result(validation, failing, manifest)

