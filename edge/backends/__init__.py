"""Inference backends, one module each, chosen by name from a registry.

`open_backend` opens one model file; `load_for_manifest` picks the bundle file that
suits the backend (Edge TPU -> tflite-edgetpu, CPU -> tflite-int8, ONNX Runtime ->
onnx-qdq / onnx-fp32), verifies its sha256 and refuses a bundle whose labels or
input size disagree with the model. `auto` tries, best first: Edge TPU, ONNX Runtime
on TensorRT or CUDA, LiteRT CPU, tflite-runtime, ONNX Runtime CPU.

CPU threads: `backend.threads`, else `default_threads()` (the cores this process may
run on, at most MAX_DEFAULT_THREADS), never the runtime's own default (LiteRT's is one
thread, which leaves the other cores of a Pi idle).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

from edge.backends.base import Backend, BackendUnavailable
from edge.errors import BundleError, LeukedgeError
from edge.formats import run_by
from edge.manifest import bundle_path, verify_file

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendUnavailable", "NAMES", "default_threads", "open_backend", "load_for_manifest"]


class Candidate(NamedTuple):
    key: str  # what a config names
    module: str  # edge.backends.<module>
    provider: str | None  # ONNX Runtime provider short name
    formats: tuple[str, ...]  # bundle files it can run, preferred first
    accelerator: bool


CANDIDATES = (  # the `auto` order; the files each runs come from edge.formats
    Candidate("edgetpu", "edgetpu", None, run_by("edgetpu"), True),
    Candidate("onnxruntime-trt", "onnx", "trt", run_by("onnx", first="onnx-qdq"), True),
    Candidate("onnxruntime-cuda", "onnx", "cuda", run_by("onnx"), True),
    Candidate("litert", "litert", None, run_by("tflite"), False),
    Candidate("tflite-runtime", "tflite_runtime", None, run_by("tflite"), False),
    Candidate("onnxruntime-cpu", "onnx", "cpu", run_by("onnx", first="onnx-qdq"), False),
)
ALIASES = {
    "litert-cpu": ("litert",),
    "litert+edgetpu": ("edgetpu",),
    "onnxruntime": ("onnxruntime-trt", "onnxruntime-cuda", "onnxruntime-cpu"),
}
NAMES = ("auto", *(c.key for c in CANDIDATES), *ALIASES)


MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """Inference threads when the config names none: the cores this process may use, at most 4.

    The agent's own stages run between invokes, not during them (the calling thread is one
    of the runtime's threads), so invoke may have every allowed core. Past 4 threads a
    batch-1 MobileNet-sized model gains little and XNNPACK's spinning workers keep more
    cores hot; on a 6-core Jetson the CPU path is the fallback and 2 cores stay with the
    camera pipeline. `os.sched_getaffinity` honours taskset, systemd CPUAffinity and
    container cpusets (not a CPU quota: set `backend.threads` there).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def _candidates(name: str) -> list[Candidate]:
    if name == "auto":
        return list(CANDIDATES)
    keys = ALIASES.get(name, (name,))
    found = [c for c in CANDIDATES if c.key in keys]
    if not found:
        raise BackendUnavailable(f"backend {name!r} is unknown (choose from: {', '.join(NAMES)})")
    return found


def _open(c: Candidate, path: Path, fmt: str, threads: int | None, device: str | None) -> Backend:
    """Open `path` with candidate `c`; a file its runtime cannot parse is bad input, not a crash."""
    module = importlib.import_module(f"edge.backends.{c.module}")
    threads = threads or default_threads()
    extra = {"provider": c.provider} if c.provider else {}
    try:
        backend = module.open_model(path, threads=threads, device=device, **extra)
    except LeukedgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - each runtime raises its own types for a malformed file
        reason = next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__
        raise BundleError(f"{path}: not a {fmt} model that {c.key} can load ({reason[:200]})") from None
    backend.threads = threads
    return backend


def _try(cands, files, threads, device, reasons: list[str]) -> tuple[Backend, str] | None:
    for c in cands:
        fmt = next((f for f in c.formats if f in files), None)
        if fmt is None:
            reasons.append(f"{c.key}: bundle has no {' / '.join(c.formats)} file")
            continue
        try:
            return _open(c, files[fmt], fmt, threads, device if c.accelerator else None), fmt
        except BackendUnavailable as exc:
            reasons.append(f"{c.key}: {exc}")
    return None


def _select(files: dict[str, Path], name: str, threads, allow_fallback: bool, device) -> tuple[Backend, str]:
    """Open the first candidate of `name` that has a file here and whose runtime is present."""
    wanted, reasons = _candidates(name), []
    found = _try(wanted, files, threads, device, reasons)
    if found is None and name != "auto":
        if not allow_fallback:
            raise BackendUnavailable(f"backend {name} unavailable and fallback is off: {'; '.join(reasons)}")
        log.warning("backend %s unavailable (%s); falling back to the best present", name, "; ".join(reasons))
        found = _try([c for c in CANDIDATES if c not in wanted], files, threads, device, reasons)
    if found is None:
        raise BackendUnavailable(f"no backend can run this model ({'; '.join(reasons)})")
    return found


def open_backend(
    model_path: Path,
    fmt: str,
    name: str = "auto",
    threads: int | None = None,
    allow_fallback: bool = True,
    device: str | None = None,
) -> Backend:
    """Open one model file of bundle format `fmt` with backend `name` (see NAMES)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BundleError(f"{model_path}: model file missing")
    return _select({fmt: model_path}, name, threads, allow_fallback, device)[0]


def load_for_manifest(
    bundle_dir: Path,
    manifest,
    backend: str = "auto",
    threads: int | None = None,
    allow_fallback: bool = True,
    device: str | None = None,
):
    """(Backend, FileEntry) for a loaded Manifest: the file verified, its shape and labels checked."""
    bundle_dir = Path(bundle_dir)
    entries = {e.format: e for e in manifest.files}
    files = {fmt: bundle_path(bundle_dir, e) for fmt, e in entries.items()}  # never a file outside the bundle
    chosen_backend, fmt = _select(files, backend, threads, allow_fallback, device)
    entry = entries[fmt]
    verify_file(bundle_dir, entry)
    want = (manifest.input.height, manifest.input.width, 3)
    problem = None
    if chosen_backend.input_shape != want:
        problem = f"takes input {chosen_backend.input_shape} but the manifest says {want}"
    elif chosen_backend.labels_count != len(manifest.labels):
        problem = f"has {chosen_backend.labels_count} outputs but the manifest lists {len(manifest.labels)} labels"
    if problem:
        chosen_backend.close()
        raise BundleError(f"{bundle_dir / entry.path}: {problem}")
    log.info("loaded %s with %s, %d CPU threads", entry.path, chosen_backend.name, chosen_backend.threads)
    return chosen_backend, entry
