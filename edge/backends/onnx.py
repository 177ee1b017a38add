"""ONNX Runtime with the TensorRT, CUDA or CPU execution provider (Jetson and x86 GPUs).

The provider that actually took the session is the backend's name, e.g.
`onnxruntime-trt`; ONNX Runtime silently falls back to later providers, so we read
it back instead of trusting what we asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.backends.base import Backend, BackendUnavailable, check_image_input, split_outputs

PROVIDERS = {
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_SHORT = {v: k for k, v in PROVIDERS.items()}
_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int8)": np.int8}


def present_providers() -> list[str]:
    """Short names ("trt", "cuda", "cpu") of the providers this onnxruntime build offers, best first."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    have = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


class OnnxBackend(Backend):
    def __init__(self, session, model_path: str):
        inp, outs = session.get_inputs()[0], session.get_outputs()
        self.model_path = model_path
        self.input_shape = check_image_input([1, *inp.shape[1:]], model_path)
        for out in outs:
            if not isinstance(out.shape[-1], int):
                raise BackendUnavailable(f"{model_path}: output shape {out.shape} has no fixed size")
        probs_at, feats_at = split_outputs([int(o.shape[-1]) for o in outs], model_path)
        self.labels_count = int(outs[probs_at].shape[-1])
        self.features_dim = 0 if feats_at is None else int(outs[feats_at].shape[-1])
        self._out_names = [outs[probs_at].name] + ([] if feats_at is None else [outs[feats_at].name])
        self.name = "onnxruntime-" + _SHORT.get(session.get_providers()[0], "cpu")
        self._session, self._in_name = session, inp.name
        self._in_dtype = _DTYPES.get(inp.type, np.float32)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        feed = x[None] if self._in_dtype == np.uint8 else x[None].astype(self._in_dtype)
        got = [np.asarray(y[0], dtype=np.float32) for y in self._session.run(self._out_names, {self._in_name: feed})]
        return got[0], (got[1] if len(got) > 1 else None)

    def close(self) -> None:
        self._session = None


def open_model(
    model_path: Path, threads: int | None = None, device: str | None = None, provider: str | None = None
) -> OnnxBackend:
    """Open with `provider` ("trt", "cuda", "cpu") first, or the best present one when None."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    present = present_providers()
    if provider is not None and provider not in present:
        raise BackendUnavailable(f"ONNX Runtime has no {PROVIDERS[provider]} here (has: {', '.join(present)})")
    order = present[present.index(provider):] if provider else present
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = []
    for short in order:
        opts = {"device_id": device} if device and short in ("trt", "cuda") else {}
        providers.append((PROVIDERS[short], opts))
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    return OnnxBackend(session, str(model_path))
