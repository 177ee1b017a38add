"""The legacy `tflite_runtime` wheel: a fallback for boxes where LiteRT has no wheel (much slower on x86)."""

from __future__ import annotations

from pathlib import Path

from edge.backends.tflite_common import TFLiteBackend, open_interpreter

NAME = "tflite-runtime"
MODULE = "tflite_runtime.interpreter"


def open_model(model_path: Path, threads: int | None = None, device: str | None = None) -> TFLiteBackend:
    return open_interpreter(MODULE, "tflite-runtime", NAME, model_path, threads)
