"""Inference backends on real int8 TFLite and ONNX files of a tiny model.

The Edge TPU cannot exist here: the tests that pick it replace
`edge.backends.edgetpu.load_delegate` (libedgetpu) with a fake loader and, where the
delegate "loads", build a plain LiteRT interpreter in place of the delegated one.
TensorRT and CUDA providers are absent, which is exactly the missing-accelerator case.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edge.backends import BackendUnavailable, load_for_manifest, open_backend
from edge.backends import edgetpu as edgetpu_mod
from edge.backends.base import dequantize_output, quantize_input
from edge.errors import BundleError
from edge.manifest import load_manifest
from leukedge.bundle_factory import make_small_bundle, make_small_run, small_dataset

pytestmark = pytest.mark.slow


def calibration_frames(size: int, n: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def path_of(bundle, fmt: str):
    return bundle / next(e.path for e in load_manifest(bundle).files if e.format == fmt)


def copy_bundle(dest):
    return make_small_bundle(dest)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def smear_frames():
    """Eight synthetic smear fields (in distribution, unlike noise) through the shared preprocessing."""
    from edge.pixels import preprocess, read_image

    paths = sorted(small_dataset().rglob("*.jpg"))[::8][:8]
    return np.stack([preprocess(read_image(p), 64) for p in paths])


@pytest.fixture(scope="module")
def keras_probs(tmp_path_factory, smear_frames):
    import keras

    model = keras.models.load_model(make_small_run(tmp_path_factory.mktemp("run")) / "model.keras")
    return model.predict(smear_frames, verbose=0)


def test_litert_int8_matches_keras(bundle, keras_probs, smear_frames):
    backend = open_backend(path_of(bundle, "tflite-int8"), "tflite-int8")
    assert backend.name == "litert-cpu"
    assert backend.input_shape == (64, 64, 3) and backend.labels_count == 4
    got = np.stack([backend.infer(f) for f in smear_frames])
    assert got.dtype == np.float32 and got.shape == (8, 4)
    assert np.abs(got - keras_probs).max() < 0.1
    assert (got.argmax(1) == keras_probs.argmax(1)).mean() >= 0.75
    assert np.allclose(got.sum(axis=1), 1.0, atol=0.03)


def test_onnx_cpu_matches_keras(bundle, keras_probs, smear_frames):
    backend = open_backend(path_of(bundle, "onnx-fp32"), "onnx-fp32")
    assert backend.name == "onnxruntime-cpu"
    got = np.stack([backend.infer(f) for f in smear_frames])
    np.testing.assert_allclose(got, keras_probs, atol=1e-4)


def test_wrong_input_shape_is_refused(bundle):
    backend = open_backend(path_of(bundle, "tflite-int8"), "tflite-int8")
    with pytest.raises(ValueError, match="input"):
        backend.infer(np.zeros((32, 32, 3), np.uint8))


def test_auto_prefers_litert_and_verifies(bundle):
    manifest = load_manifest(bundle)
    backend, entry = load_for_manifest(bundle, manifest)
    assert (backend.name, entry.format) == ("litert-cpu", "tflite-int8")
    backend, entry = load_for_manifest(bundle, manifest, backend="onnxruntime")
    assert backend.name == "onnxruntime-cpu" and entry.format in ("onnx-qdq", "onnx-fp32")


def test_auto_with_only_onnx(bundle):
    manifest = load_manifest(bundle)
    manifest.files = [e for e in manifest.files if e.format.startswith("onnx")]
    backend, entry = load_for_manifest(bundle, manifest)
    assert backend.name == "onnxruntime-cpu"


def test_missing_accelerator_one_line_and_fallback_rule(bundle, caplog):
    manifest = load_manifest(bundle)
    with pytest.raises(BackendUnavailable, match="fallback is off") as exc:
        load_for_manifest(bundle, manifest, backend="onnxruntime-trt", allow_fallback=False)
    assert "\n" not in str(exc.value) and "TensorrtExecutionProvider" in str(exc.value)
    with caplog.at_level(logging.WARNING):
        backend, _ = load_for_manifest(bundle, manifest, backend="edgetpu", allow_fallback=True)
    assert backend.name == "litert-cpu"
    assert any("edgetpu unavailable" in r.message for r in caplog.records)


def _with_edgetpu_file(tmp_path):
    """A bundle copy whose manifest also lists a `tflite-edgetpu` file (a copy of the int8 one)."""
    b = copy_bundle(tmp_path / "b")
    (b / "model_edgetpu.tflite").write_bytes(path_of(b, "tflite-int8").read_bytes())
    m = json.loads((b / "manifest.json").read_text())
    entry = next(e for e in m["files"] if e["format"] == "tflite-int8")
    m["files"].append({**entry, "path": "model_edgetpu.tflite", "format": "tflite-edgetpu"})
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def test_fake_edgetpu_selected_by_auto(tmp_path, monkeypatch):
    """FAKE Edge TPU: the delegate loader returns a marker and the interpreter is plain LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    calls = []
    monkeypatch.setattr(edgetpu_mod, "load_delegate", lambda device=None: calls.append(device) or "fake-delegate")
    monkeypatch.setattr(
        edgetpu_mod, "make_interpreter", lambda path, delegate, threads: Interpreter(model_path=path)
    )
    b = _with_edgetpu_file(tmp_path)
    backend, entry = load_for_manifest(b, load_manifest(b), device="usb")
    assert (backend.name, entry.format) == ("litert+edgetpu", "tflite-edgetpu")
    assert calls == ["usb"]
    assert backend.infer(calibration_frames(64, 1)[0]).shape == (4,)


def test_fake_edgetpu_absent_auto_falls_to_cpu(tmp_path, monkeypatch):
    """FAKE Edge TPU loader that fails the way libedgetpu does when no device is attached."""

    def no_device(device=None):
        raise ValueError("Failed to load delegate from libedgetpu.so.1")

    monkeypatch.setattr(edgetpu_mod, "load_delegate", no_device)
    b = _with_edgetpu_file(tmp_path)
    backend, entry = load_for_manifest(b, load_manifest(b))
    assert (backend.name, entry.format) == ("litert-cpu", "tflite-int8")
    with pytest.raises(BackendUnavailable, match="Edge TPU"):
        load_for_manifest(b, load_manifest(b), backend="edgetpu", allow_fallback=False)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m.update(labels=["A", "B", "C"]), "3 labels"),
        (lambda m: m.update(input={**m["input"], "height": 96, "width": 96}), "manifest says"),
    ],
)
def test_manifest_disagreeing_with_model_is_refused(tmp_path, change, match):
    b = copy_bundle(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    change(m)
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=match):
        load_for_manifest(b, load_manifest(b))


def test_changed_file_is_refused(tmp_path):
    b = copy_bundle(tmp_path / "b")
    manifest = load_manifest(b)
    with open(path_of(b, "tflite-int8"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_for_manifest(b, manifest)


def test_unknown_backend_name(bundle):
    with pytest.raises(BackendUnavailable, match="unknown"):
        open_backend(path_of(bundle, "tflite-int8"), "tflite-int8", name="coreml")


def test_quantize_helpers():
    x = np.array([[[0, 128, 255]]], np.uint8)
    assert quantize_input(x, np.uint8, 0.0, 0) is x
    np.testing.assert_array_equal(quantize_input(x, np.int8, 1.0, -128), [[[-128, 0, 127]]])
    np.testing.assert_array_equal(quantize_input(x, np.float32, 0.0, 0), x.astype(np.float32))
    # int64 arithmetic: uint8 255 - zero point 255 must not wrap around
    y = dequantize_output(np.array([255, 0], np.uint8), 1 / 256, 255)
    np.testing.assert_allclose(y, [0.0, -255 / 256])
    np.testing.assert_allclose(dequantize_output(np.array([-128, 127], np.int8), 1 / 256, -128), [0.0, 255 / 256])
