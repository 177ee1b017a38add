"""The one table of bundle model formats: file name, whether it is int8, which runtime runs it.

Everything else that names formats is derived from `TABLE`: the manifest's allowed
values (edge.manifest), the backends' candidate files (edge.backends), the converter's
file names, defaults, validation backends and int8 gate (converter/), the self-test's
tolerances (edge.selftest) and `leukedge bench`'s float reference.
Row order is the build order (onnx-qdq is quantized from onnx-fp32) and, unless a
backend says otherwise, the preference order among the files one runtime can open.
"""

from __future__ import annotations

from typing import NamedTuple


class Tolerance(NamedTuple):
    """How far the box's raw outputs may stray from the lab's in a bundle's self-test (edge.selftest)."""

    value: float  # absolute, on probabilities
    in_steps: bool = False  # `value` counts the output's quantization steps (its scale) instead
    accelerated: float | None = None  # on a GPU provider (TensorRT, CUDA), when it differs


class ModelFormat(NamedTuple):
    name: str  # what a manifest and --formats say
    file: str  # file name inside a bundle
    int8: bool  # integer-quantized: held to the converter's accuracy gate
    runtime: str  # edge.backends module family that opens it: "tflite", "edgetpu" or "onnx"
    cpu_backend: str | None  # edge backend that validates it on a plain CPU (None: needs its accelerator)
    default: bool  # built by `leukedge convert` when --formats is not given
    selftest: Tolerance
    held_to: str | None = None  # the format whose measured outputs its self-test compares against (None: its own)
    reference: int = 0  # `leukedge bench`'s float reference: 1 first choice, 2 second; 0 never


# Self-test tolerances: int8 on a CPU runtime, one quantization step of the output; the Edge
# TPU three (it requantizes with its own rounding), against the int8 file's outputs; ONNX
# Runtime 0.02 on its CPU provider, 0.05 on TensorRT or CUDA.
TABLE: tuple[ModelFormat, ...] = (
    ModelFormat("tflite-int8", "model_int8.tflite", True, "tflite", "litert", True, Tolerance(1.0, in_steps=True)),
    ModelFormat("tflite-fp16", "model_fp16.tflite", False, "tflite", "litert", False, Tolerance(1e-2)),
    ModelFormat("tflite-fp32", "model_fp32.tflite", False, "tflite", "litert", False, Tolerance(1e-3), reference=2),
    ModelFormat("tflite-edgetpu", "model_int8_edgetpu.tflite", True, "edgetpu", None, False,
                Tolerance(3.0, in_steps=True), held_to="tflite-int8"),
    ModelFormat("onnx-fp32", "model_fp32.onnx", False, "onnx", "onnxruntime-cpu", True,
                Tolerance(0.02, accelerated=0.05), reference=1),
    ModelFormat("onnx-qdq", "model_qdq.onnx", True, "onnx", "onnxruntime-cpu", True, Tolerance(0.02, accelerated=0.05)),
)
BY_NAME = {f.name: f for f in TABLE}

FORMATS: tuple[str, ...] = tuple(f.name for f in TABLE)
FILE_NAMES: dict[str, str] = {f.name: f.file for f in TABLE}
DEFAULT_FORMATS: tuple[str, ...] = tuple(f.name for f in TABLE if f.default)
INT8_FORMATS: tuple[str, ...] = tuple(f.name for f in TABLE if f.int8 and f.cpu_backend)  # gated on this CPU
BACKEND_FOR: dict[str, str] = {f.name: f.cpu_backend for f in TABLE if f.cpu_backend}
REFERENCE_ORDER: tuple[str, ...] = tuple(f.name for f in sorted(TABLE, key=lambda f: f.reference) if f.reference)
# The file the box runs by default among those this CPU can run: int8 first.
PRIMARY_ORDER: tuple[str, ...] = tuple(sorted(BACKEND_FOR, key=lambda name: not BY_NAME[name].int8))


def run_by(runtime: str, first: str | None = None) -> tuple[str, ...]:
    """Formats `runtime` opens, preferred first (table order, or `first` ahead of the rest)."""
    names = [f.name for f in TABLE if f.runtime == runtime]
    if first is not None:
        names.remove(first)
        names.insert(0, first)
    return tuple(names)
