"""The legacy `tflite_runtime` wheel: a fallback for boxes where LiteRT has no wheel (much slower on x86)."""

from __future__ import annotations

from pathlib import Path

from edge.backends.base import BackendUnavailable
from edge.backends.tflite_common import TFLiteBackend

NAME = "tflite-runtime"
FORMATS = ("tflite-int8", "tflite-fp16", "tflite-fp32")


def available() -> bool:
    try:
        import tflite_runtime.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def open_model(model_path: Path, threads: int | None = None, device: str | None = None) -> TFLiteBackend:
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        raise BackendUnavailable("tflite-runtime is not installed: pip install tflite-runtime") from None
    interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
    return TFLiteBackend(interpreter, NAME, str(model_path))
