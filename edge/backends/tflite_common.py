"""One TFLite interpreter wrapped as a Backend: LiteRT, its Edge TPU delegate and tflite-runtime share it."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from edge.backends.base import Backend, BackendUnavailable, check_image_input, dequantize_output, quantize_input


def open_interpreter(module: str, pip_name: str, name: str, model_path: Path, threads: int | None) -> "TFLiteBackend":
    """Open `model_path` with the `Interpreter` of `module` (LiteRT and tflite-runtime share the API)."""
    try:
        interpreter_cls = importlib.import_module(module).Interpreter
    except ImportError:
        raise BackendUnavailable(f"{pip_name} is not installed: pip install {pip_name}") from None
    return TFLiteBackend(interpreter_cls(model_path=str(model_path), num_threads=threads), name, str(model_path))


class TFLiteBackend(Backend):
    """Wrap an allocated-or-not `Interpreter` (any of the three packages: same API)."""

    def __init__(self, interpreter, name: str, model_path: str):
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        self.name = name
        self.model_path = model_path
        self.input_shape = check_image_input(inp["shape"], model_path)
        self.labels_count = int(out["shape"][-1])
        self._interpreter = interpreter
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_scale, self._in_zp = (float(v) for v in inp["quantization"])
        self._out_scale, self._out_zp = (float(v) for v in out["quantization"])
        self._in_zp, self._out_zp = int(self._in_zp), int(self._out_zp)

    @property
    def input_dtype(self) -> np.dtype:
        return self._in_dtype

    def _run(self, x: np.ndarray) -> np.ndarray:
        it = self._interpreter
        it.set_tensor(self._in_index, quantize_input(x, self._in_dtype, self._in_scale, self._in_zp)[None])
        it.invoke()
        return dequantize_output(it.get_tensor(self._out_index)[0], self._out_scale, self._out_zp)

    def close(self) -> None:
        self._interpreter = None
