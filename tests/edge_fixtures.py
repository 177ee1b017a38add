"""Tiny real models and bundles for the edge agent's tests (TensorFlow is allowed in tests).

`tiny_bundle()` converts a small untrained uint8-input Keras CNN to a real int8 TFLite
file and a real ONNX file and writes a manifest with `edge.bundle.write_manifest`.
Built once per test process and cached; copy it before changing it.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def tiny_keras_model(size: int = 64, classes: int = 4, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.ops.cast(inp, "float32"))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out)


def calibration_frames(size: int, n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def to_tflite_int8(model, size: int, path: Path) -> Path:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([f[None]] for f in calibration_frames(size))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    path.write_bytes(conv.convert())
    return path


def to_onnx(model, size: int, path: Path) -> Path:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, size, size, 3), tf.uint8, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    return path


@functools.lru_cache(maxsize=None)
def tiny_bundle(size: int = 64, classes: int = 4) -> Path:
    """A bundle dir with tflite-int8 and onnx-fp32 files of one tiny model (cached)."""
    from edge.bundle import LABELS, FileEntry, InputSpec, Manifest, sha256_file, write_manifest

    out = Path(tempfile.mkdtemp(prefix="leukedge-tiny-bundle-"))
    model = tiny_keras_model(size, classes)
    files = []
    for fmt, name, make in (("tflite-int8", "model_int8.tflite", to_tflite_int8), ("onnx-fp32", "model.onnx", to_onnx)):
        path = make(model, size, out / name)
        files.append(FileEntry(path=name, format=fmt, sha256=sha256_file(path), size_bytes=path.stat().st_size))
    labels = list(LABELS) if classes == 4 else [f"c{i}" for i in range(classes)]
    manifest = Manifest(name="tiny", arch="custom_cnn", labels=labels, input=InputSpec(height=size, width=size), files=files)
    write_manifest(out, manifest)
    model.save(out / "model.keras")
    return out


def copy_bundle(dest: Path, size: int = 64) -> Path:
    """A private, writable copy of the cached tiny bundle."""
    return Path(shutil.copytree(tiny_bundle(size), dest))
