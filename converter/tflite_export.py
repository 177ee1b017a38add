"""Keras model -> TFLite flatbuffers (int8, fp16, fp32) for LiteRT on the CPU and the Edge TPU.

The trained model takes uint8 (docs/contracts.md) with its scaling as a layer inside. Converting
it as is leaves a leading CAST uint8->float that is neither int8 nor Edge TPU friendly,
so we convert a batch-1 clone whose input is float32 (same layers, weights copied) and
ask the converter for uint8 input/output: the first op becomes a QUANTIZE with the raw
bytes as input (scale 1, zero point 0). `from_keras_model` is used throughout;
`from_concrete_functions` silently drops the weights of Keras 3 models.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from edge.errors import LeukedgeError
from edge.manifest import Quant
from trainer.progress import frames


def float_clone(model):
    """A batch-1 copy of `model` whose input is float32 0..255 (same layers and weights)."""
    import keras

    h, w, c = model.input_shape[1:]
    inp = keras.Input((h, w, c), batch_size=1, dtype="float32", name="image")
    clone = keras.models.clone_model(model, input_tensors=inp)
    clone.set_weights(model.get_weights())
    return clone


def _converter(clone, calib: np.ndarray | None, kind: str):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(clone)
    if kind == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind in ("int8", "int8-debug"):
        data = np.asarray(calib, np.float32)

        def representative():  # the converter's calibration pass: a bar in a terminal
            for image in frames(data, f"calibrate tflite-{kind}"):
                yield [image[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if kind == "int8":
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
    return conv


def to_tflite(clone, kind: str, calib: np.ndarray | None = None) -> bytes:
    """Convert a float_clone: kind "int8" (full integer, uint8 in/out), "fp16" or "fp32"."""
    if kind not in ("int8", "fp16", "fp32"):
        raise ValueError(f"unknown TFLite kind {kind!r}")
    if kind == "int8" and (calib is None or len(calib) == 0):
        raise ValueError("int8 conversion needs calibration images")
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the SavedModel signature it exports
        data = _converter(clone, calib, kind).convert()
    if kind == "int8":
        quant_in, _ = io_quant(data)
        if (quant_in.scale, quant_in.zero_point) != (1.0, 0):
            raise LeukedgeError(
                f"int8 input quantization is ({quant_in.scale}, {quant_in.zero_point}), expected raw bytes (1.0, 0)"
            )
    return data


def quant_debugger(clone, calib: np.ndarray, images: np.ndarray):
    """tf.lite's QuantizationDebugger over the same int8 conversion (float I/O so it can compare).

    Calibrated on `calib` like the shipped file, measured on `images`.
    """
    import tensorflow as tf

    data = np.asarray(images, np.float32)

    def dataset():
        for image in data:
            yield [image[None]]

    return tf.lite.experimental.QuantizationDebugger(
        converter=_converter(clone, calib, "int8-debug"), debug_dataset=dataset
    )


def io_quant(data: bytes) -> tuple[Quant | None, Quant | None]:
    """(input, output) quantization of a TFLite model; None for float tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)

    def quant(detail) -> Quant | None:
        scale, zero = detail["quantization"]
        if np.dtype(detail["dtype"]).kind == "f":
            return None
        return Quant(scale=float(scale), zero_point=int(zero))

    return quant(interp.get_input_details()[0]), quant(interp.get_output_details()[0])
