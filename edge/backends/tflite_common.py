"""One TFLite interpreter wrapped as a Backend: LiteRT, its Edge TPU delegate and tflite-runtime share it."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from edge.backends.base import (Backend, BackendUnavailable, check_image_input, dequantize_output, quantize_input,
                                split_outputs)


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
        outs = interpreter.get_output_details()
        probs_at, feats_at = split_outputs([int(o["shape"][-1]) for o in outs], model_path)
        self.name = name
        self.model_path = model_path
        self.input_shape = check_image_input(inp["shape"], model_path)
        self.labels_count = int(outs[probs_at]["shape"][-1])
        self._interpreter = interpreter
        self._in_index = inp["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_scale, self._in_zp = (float(v) for v in inp["quantization"])
        self._in_zp = int(self._in_zp)
        self._outputs = [(o["index"], float(o["quantization"][0]), int(o["quantization"][1]))
                         for o in [outs[probs_at]] + ([] if feats_at is None else [outs[feats_at]])]
        self.features_dim = 0 if feats_at is None else int(outs[feats_at]["shape"][-1])

    @property
    def input_dtype(self) -> np.dtype:
        return self._in_dtype

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        it = self._interpreter
        it.set_tensor(self._in_index, quantize_input(x, self._in_dtype, self._in_scale, self._in_zp)[None])
        it.invoke()
        got = [dequantize_output(it.get_tensor(index)[0], scale, zp) for index, scale, zp in self._outputs]
        return got[0], (got[1] if len(got) > 1 else None)

    def close(self) -> None:
        self._interpreter = None
