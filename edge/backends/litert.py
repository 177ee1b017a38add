"""LiteRT (`ai_edge_litert`) on the CPU: the default for the int8 TFLite file (XNNPACK kernels)."""

from __future__ import annotations

from pathlib import Path

from edge.backends.base import BackendUnavailable
from edge.backends.tflite_common import TFLiteBackend

NAME = "litert-cpu"
FORMATS = ("tflite-int8", "tflite-fp16", "tflite-fp32")


def available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def open_model(model_path: Path, threads: int | None = None, device: str | None = None) -> TFLiteBackend:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BackendUnavailable("LiteRT is not installed: pip install ai-edge-litert") from None
    interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
    return TFLiteBackend(interpreter, NAME, str(model_path))
