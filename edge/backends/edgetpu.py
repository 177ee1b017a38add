"""LiteRT with the Coral Edge TPU delegate, loading the `tflite-edgetpu` (edgetpu_compiler) file.

pycoral is not needed (and has no wheels for current Pythons): LiteRT loads
`libedgetpu.so.1` as an external delegate. The delegate loader and the interpreter
factory are module attributes so the selection logic can be exercised where no
Edge TPU exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.backends.base import BackendUnavailable
from edge.backends.tflite_common import TFLiteBackend

NAME = "litert+edgetpu"
LIBRARY = "libedgetpu.so.1"
log = logging.getLogger(__name__)


def load_delegate(device: str | None = None):
    """The Edge TPU delegate for `device` ("usb", "pci", "usb:0", ...) or the first one found."""
    from ai_edge_litert.interpreter import load_delegate as _load

    return _load(LIBRARY, {"device": device} if device else {})


def make_interpreter(model_path: str, delegate, threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=model_path, experimental_delegates=[delegate], num_threads=threads)


def probe(device: str | None = None):
    """The loaded delegate, or None when no Edge TPU (or no libedgetpu) is present."""
    try:
        return load_delegate(device)
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        log.debug("no Edge TPU: %s", exc)
        return None


def open_model(model_path: Path, threads: int | None = None, device: str | None = None) -> TFLiteBackend:
    delegate = probe(device)
    if delegate is None:
        where = f" ({device})" if device else ""
        raise BackendUnavailable(f"Edge TPU{where} not found: {LIBRARY} did not load or no device is attached")
    return TFLiteBackend(make_interpreter(str(model_path), delegate, threads), NAME, str(model_path))
