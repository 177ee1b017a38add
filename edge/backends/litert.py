"""LiteRT (`ai_edge_litert`) on the CPU: the default for the int8 TFLite file (XNNPACK kernels)."""

from __future__ import annotations

from pathlib import Path

from edge.backends.tflite_common import TFLiteBackend, open_interpreter

NAME = "litert-cpu"
MODULE = "ai_edge_litert.interpreter"


def open_model(model_path: Path, threads: int | None = None, device: str | None = None) -> TFLiteBackend:
    return open_interpreter(MODULE, "ai-edge-litert", NAME, model_path, threads)
