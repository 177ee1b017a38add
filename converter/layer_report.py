"""Where the int8 error enters: each layer's quantized output against its float output.

tf.lite's QuantizationDebugger runs the int8 model and, for every quantized op, the same
op in float on the same (dequantized) inputs. So each row is the error that layer adds by
itself, not the error it inherits, which is what points at the layer to fix (keep in
float, widen its calibration, or fine-tune). `rmse_steps` is the RMS error in units of the
layer's quantization step: about 0.29 is perfect rounding; large values mean clipping or a
range too wide for the values that matter.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np

from converter.tflite_export import quant_debugger


def layer_errors(clone, calib: np.ndarray, images: np.ndarray) -> list[dict]:
    """Per-layer error rows for the int8 conversion of `clone` (calibrated on `calib`), measured on `images`."""
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the SavedModel signature it exports
        debugger = quant_debugger(clone, calib, images)
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for rec in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(rec["scale"]) or 1.0
        mse = float(rec["mean_squared_error"])
        rows.append({
            "op": rec["op_name"],
            "tensor": rec["tensor_name"],
            "elements": int(float(rec["num_elements"])),
            "rmse": float(np.sqrt(mse)),
            "rmse_steps": float(np.sqrt(mse) / scale),
            "max_abs_error": float(rec["max_abs_error"]),
            "mean_error": float(rec["mean_error"]),
            "scale": float(rec["scale"]),
            "zero_point": int(float(rec["zero_point"])),
        })
    return rows


def worst(rows: list[dict], k: int = 3) -> list[dict]:
    return sorted(rows, key=lambda r: -r["rmse_steps"])[:k]


def write_report(bundle: Path, rows: list[dict], n_images: int) -> Path:
    path = Path(bundle) / "layer_report.json"
    report = {
        "method": "tf.lite QuantizationDebugger: each int8 op against the same op in float on the same inputs",
        "images": n_images,
        "layers": rows,
        "worst": [r["tensor"] for r in worst(rows)],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def format_worst(rows: list[dict], k: int = 3) -> str:
    lines = [f"  {r['op']:<18} rmse {r['rmse_steps']:.2f} steps  max {r['max_abs_error']:.4f}  {r['tensor'][:60]}"
             for r in worst(rows, k)]
    return "layers adding the most int8 error:\n" + "\n".join(lines)
