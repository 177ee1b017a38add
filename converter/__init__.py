"""model.keras -> validated bundle (int8 TFLite for Coral/CPU, Q/DQ ONNX for Jetson)."""
