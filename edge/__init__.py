"""The edge box: camera -> gate -> preprocess -> infer -> aggregate -> outbox -> MQTT.

Never imports TensorFlow; the workstation parts import `edge.bundle` for the shared contract.
"""
