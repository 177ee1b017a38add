"""The edge box: camera -> gate -> preprocess -> infer -> aggregate -> outbox -> MQTT.

Never imports TensorFlow; the workstation parts import `edge.manifest` and `edge.pixels` for the shared contract.
The kit's version lives here, at the bottom of the import graph, so the agent can report
it without importing the command-line package (`leukedge` re-exports it; pyproject reads it).
"""

__version__ = "0.1.0"
