"""What every inference backend provides, and the int8 <-> float helpers they share.

A backend takes one preprocessed frame (HxWx3 uint8 RGB, the model input of docs/contracts.md)
and returns float32 probabilities, whatever the model file's own tensor types are.
"""

from __future__ import annotations

import numpy as np

from edge.errors import BadInput


class BackendUnavailable(BadInput):
    """The asked-for runtime or accelerator is not present on this box."""


class Backend:
    """A loaded model. Subclasses set the attributes and implement `_run`."""

    name: str = "?"
    input_shape: tuple[int, int, int] = (0, 0, 3)
    labels_count: int = 0
    model_path: str = ""
    threads: int = 0  # CPU threads it was opened with (edge.backends.default_threads unless configured)
    features_dim: int = 0  # size of the model's second output (penultimate features), 0 when it has none

    def infer(self, x: np.ndarray) -> np.ndarray:
        """One HxWx3 uint8 frame -> float32 probabilities of shape (labels_count,)."""
        return self.infer_with_features(x)[0]

    def infer_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, from the same invoke, the penultimate features (None without that output)."""
        if x.shape != self.input_shape:
            raise ValueError(f"{self.name}: input {x.shape}, model takes {self.input_shape}")
        return self._run(x)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the runtime (optional for most backends)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.input_shape} -> {self.labels_count}>"


def quantize_input(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """uint8 frame -> the model's input type. Raw bytes pass through untouched (the usual case)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8 and scale in (0.0, 1.0) and zero_point == 0:
        return x
    if dtype.kind == "f":
        return x.astype(dtype)
    info = np.iinfo(dtype)
    if scale in (0.0, 1.0):  # e.g. int8 with zero point -128: shift, no float math
        q = x.astype(np.int32) + zero_point
    else:
        q = np.rint(x.astype(np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Quantized scores -> float32, via int64 so `y - zero_point` cannot overflow (as pycoral's get_scores)."""
    if y.dtype.kind == "f":
        return y.astype(np.float32, copy=False)
    if scale == 0.0:  # unquantized integer output: nothing to scale
        return y.astype(np.float32)
    return (scale * (y.astype(np.int64) - zero_point)).astype(np.float32)


def split_outputs(dims: list[int], model_path: str) -> tuple[int, int | None]:
    """Which output is which: (probabilities, features or None), from each output's last dimension.

    A bundle with the unfamiliar-input guard has two outputs, the class probabilities and the
    penultimate features, which the converter makes wider than the label count; runtimes do
    not keep the outputs' order, so the narrower one is the probabilities."""
    if len(dims) == 1:
        return 0, None
    if len(dims) != 2 or dims[0] == dims[1]:
        raise BadInput(f"{model_path}: outputs of sizes {dims}; expected probabilities and, optionally, wider features")
    return (0, 1) if dims[0] < dims[1] else (1, 0)


def check_image_input(shape, model_path: str) -> tuple[int, int, int]:
    """(1, H, W, 3) or (N?, H, W, 3) -> (H, W, 3); anything else cannot take a camera frame."""
    dims = list(shape)
    if len(dims) != 4 or dims[3] != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims[1:]):
        raise BadInput(f"{model_path}: model input shape {dims} is not (1, H, W, 3) RGB")
    return int(dims[1]), int(dims[2]), 3
