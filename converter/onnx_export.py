"""Keras model -> float ONNX, and an int8 Q/DQ ONNX for TensorRT on Jetson.

Float: Keras 3's own `model.export(format="onnx")` (it drives tf2onnx) keeps the uint8
input and the scaling layer, so the Jetson gets the same raw-bytes contract as the TFLite
file. The batch dimension stays dynamic (`N x H x W x 3`); the agent feeds batch 1 and
deploy/jetson/build_engine.sh pins it for TensorRT with --shapes.

Q/DQ: onnxruntime's static quantization (per-channel int8 weights, int8 activations,
QuantFormat.QDQ) over the same calibration images as the TFLite file. QuantizeLinear /
DequantizeLinear pairs are explicit quantization, which TensorRT consumes directly. The
uint8 input stays uint8: the quantizer only touches float tensors, from the Cast on.
Weights use 7 bits (`reduce_range`): x86 CPUs without VNNI (AVX2/AVX-512) saturate the
int16 intermediate of 8-bit dot products, and onnxruntime's fused QLinearConv then disagrees
with the Q/DQ graph's own arithmetic (measured: 55 % top-1 agreement with the float model
at 8 bits, 97 % at 7 bits, on the same small CNN). The file must validate on the machine
that converts it and run on any box; 7-bit weights cost TensorRT a negligible resolution.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edge.errors import LeukedgeError


def export_fp32(model, path: Path) -> Path:
    """Write the float ONNX of a Keras model (uint8 NHWC input, dynamic batch)."""
    import onnx

    h, w, c = model.input_shape[1:]
    model(np.zeros((1, h, w, c), np.uint8), training=False)  # Keras exports only called models
    model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    elem = proto.graph.input[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.UINT8:
        raise LeukedgeError(f"{path.name}: ONNX input type {onnx.TensorProto.DataType.Name(elem)}, expected UINT8")
    return path


class _Reader:
    """onnxruntime CalibrationDataReader over a uint8 array, one image per batch."""

    def __init__(self, input_name: str, x: np.ndarray):
        self._it = iter([{input_name: x[i : i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self._it, None)


def quantize_qdq(fp32_path: Path, out_path: Path, calib: np.ndarray) -> Path:
    """Static int8 Q/DQ quantization of a float ONNX with the calibration images."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(fp32_path)).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), _Reader(input_name, np.asarray(calib, np.uint8)),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return out_path
