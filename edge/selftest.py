"""A bundle's self-test: a few preprocessed validation images and the outputs the lab measured.

The converter writes `selftest.npz` (`images`: N x H x W x 3 uint8, model input as the
box feeds it; `expected_<format>`: N x C raw outputs of each format it could run).
Before the agent switches to a new bundle it runs the loaded backend on those images
and compares raw outputs, before any post-processing: top-1 must match on every image
and every probability must agree within the format's tolerance (edge.formats.TABLE, the
`selftest` column). A box whose runtime or accelerator computes different answers
refuses the model instead of misclassifying.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.errors import BundleError
from edge.formats import BY_NAME

log = logging.getLogger(__name__)

FILE = "selftest.npz"
FORMAT = "selftest"
BUDGET_BYTES = 620_000  # raw image bytes: 4 images at 224 px, more at smaller sizes
MAX_IMAGES = 8


class SelfTestFailed(BundleError):
    """The box's runtime does not reproduce the lab's outputs for this bundle."""


class Report(NamedTuple):
    n: int
    max_diff: float
    tolerance: float
    format: str

    def to_dict(self) -> dict:
        return {"images": self.n, "max_diff": round(self.max_diff, 6), "tolerance": round(self.tolerance, 6),
                "format": self.format}


def image_count(height: int, width: int) -> int:
    return int(max(2, min(MAX_IMAGES, BUDGET_BYTES // (height * width * 3))))


def pick(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """n images taking classes in turn (first of each class, then second, ...)."""
    order, by_class = [], [list(np.flatnonzero(y == c)) for c in np.unique(y)]
    while len(order) < min(n, len(x)) and any(by_class):
        for idx in by_class:
            if idx and len(order) < n:
                order.append(idx.pop(0))
    return np.ascontiguousarray(x[np.array(order, dtype=int)])


def write(path: Path, images: np.ndarray, expected: dict[str, np.ndarray]) -> Path:
    arrays = {"images": images.astype(np.uint8)}
    arrays.update({f"expected_{fmt}": np.asarray(p, np.float32) for fmt, p in expected.items()})
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def tolerance(fmt: str, backend_name: str, output_quant) -> float:
    """The largest output difference the self-test accepts for `fmt` run by `backend_name`."""
    tol = BY_NAME[fmt].selftest
    if tol.in_steps:
        scale = output_quant.scale if output_quant is not None and output_quant.scale > 0 else 1 / 256
        return tol.value * scale + 1e-6
    if tol.accelerated is not None and ("trt" in backend_name or "cuda" in backend_name):
        return tol.accelerated
    return tol.value


def run(bundle_dir: Path, manifest, entry, backend) -> Report | None:
    """Run the self-test for the loaded (backend, entry); None (with a warning) for a bundle without one."""
    st = next((e for e in manifest.files if e.format == FORMAT), None)
    if st is None:
        log.warning("bundle %s has no self-test: loaded without checking this runtime's outputs", manifest.name)
        return None
    path = Path(bundle_dir) / st.path
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise SelfTestFailed(f"{path}: unreadable self-test ({exc})") from None
    want_fmt = BY_NAME[entry.format].held_to or entry.format
    images, expected = arrays.get("images"), arrays.get(f"expected_{want_fmt}")
    if expected is None:
        log.warning("self-test of %s has no expected outputs for %s: skipped", manifest.name, want_fmt)
        return None
    shape = (manifest.input.height, manifest.input.width, 3)
    if images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape \
            or expected.shape != (len(images), len(manifest.labels)) or len(images) == 0:
        raise SelfTestFailed(f"{path}: images/expected arrays do not match the manifest's input {shape} "
                             f"and {len(manifest.labels)} labels")
    tol = tolerance(entry.format, backend.name, entry.output_quant)
    worst = 0.0
    for i, (x, want) in enumerate(zip(images, expected)):
        got = np.asarray(backend.infer(x), np.float32)
        if int(np.argmax(got)) != int(np.argmax(want)):
            raise SelfTestFailed(
                f"self-test failed on {backend.name}: image {i} top-1 {manifest.labels[int(np.argmax(got))]}, "
                f"expected {manifest.labels[int(np.argmax(want))]}")
        worst = max(worst, float(np.max(np.abs(got - want))))
    if worst > tol:
        raise SelfTestFailed(f"self-test failed on {backend.name}: outputs differ by up to {worst:.4f}, "
                             f"over the {entry.format} tolerance {tol:.4f}")
    return Report(len(images), worst, tol, entry.format)
