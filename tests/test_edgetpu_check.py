"""Edge TPU readiness check on real TFLite files, and the edgetpu_compiler path.

The compiler tests use a FAKE `edgetpu_compiler` (a Python script put on PATH): the real
compiler and the Edge TPU cannot exist on this machine. The fake copies its input to
`<stem>_edgetpu.tflite` and writes stdout and `<stem>_edgetpu.log` in the real compiler's
format (version 16), mapping every op to the Edge TPU unless FAKE_EDGETPU_CPU_OPS names
ops to report as falling back to the CPU.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap

import numpy as np
import pytest

FAKE_COMPILER = textwrap.dedent('''\
    #!{python}
    """FAKE edgetpu_compiler for tests: output in the format of Edge TPU Compiler 16."""
    import os, shutil, sys
    from collections import Counter
    args = sys.argv[1:]
    out_dir = args[args.index("-o") + 1] if "-o" in args else "."
    model = args[-1]
    stem = os.path.splitext(os.path.basename(model))[0]
    out = os.path.join(out_dir, stem + "_edgetpu.tflite")
    shutil.copyfile(model, out)
    from ai_edge_litert.interpreter import Interpreter
    ops = Counter(d["op_name"] for d in Interpreter(model_path=model)._get_ops_details())
    cpu = set(filter(None, os.environ.get("FAKE_EDGETPU_CPU_OPS", "").split(",")))
    rows = []
    for op, n in sorted(ops.items()):
        status = ("Operation is otherwise supported, but not mapped due to some unspecified limitation"
                  if op in cpu else "Mapped to Edge TPU")
        rows.append(f"{{op:<30}} {{n:<10}} {{status}}")
    n_cpu = sum(n for op, n in ops.items() if op in cpu)
    head = "Edge TPU Compiler version 16.0.384591198\\n"
    log = head + f"Input: {{model}}\\nOutput: {{out}}\\n\\nOperator                       Count      Status\\n\\n" + "\\n".join(rows) + "\\n"
    open(os.path.join(out_dir, stem + "_edgetpu.log"), "w").write(log)
    print(head + "Started a compilation timeout timer of 180 seconds.\\n\\nModel compiled successfully in 12 ms.\\n")
    print(f"Input model: {{model}}\\nOutput model: {{out}}\\nNumber of Edge TPU subgraphs: 1\\n"
          f"Total number of operations: {{sum(ops.values())}}\\nOperation log: {{stem}}_edgetpu.log\\n")
    if n_cpu:
        print("Model successfully compiled but not all operations are supported by the Edge TPU.")
        print(f"Number of operations that will run on Edge TPU: {{sum(ops.values()) - n_cpu}}")
        print(f"Number of operations that will run on CPU: {{n_cpu}}")
    print("Compilation child process completed within timeout period.\\nCompilation succeeded!")
''')


def _tiny(dynamic_batch: bool = False, flatten: bool = False):
    import keras

    inp = keras.Input((16, 16, 3), batch_size=None if dynamic_batch else 1, dtype="float32")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.Flatten()(x) if flatten else keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))


def _int8(model) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield [rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    return conv.convert()


def test_clean_int8_model_is_ready():
    from converter.edgetpu import check_readiness

    ready = check_readiness(_int8(_tiny()))
    assert ready.ok, ready.problems
    assert ready.ops["QUANTIZE"] == 2 and "CONV_2D" in ready.op_versions


def test_dynamic_batch_flatten_is_flagged():
    """A Flatten on a dynamic batch emits SHAPE (not an Edge TPU op) and dynamic shapes."""
    from converter.edgetpu import check_readiness

    ready = check_readiness(_int8(_tiny(dynamic_batch=True, flatten=True)))
    assert not ready.ok
    assert any("SHAPE is not supported by the Edge TPU" in p for p in ready.problems), ready.problems
    assert any("dynamic shape" in p for p in ready.problems)


def test_float_model_is_flagged():
    import tensorflow as tf

    from converter.edgetpu import check_readiness

    ready = check_readiness(tf.lite.TFLiteConverter.from_keras_model(_tiny()).convert())
    assert any("is float32" in p for p in ready.problems)


def test_parse_real_log_format():
    from converter.edgetpu import parse_compiler_output

    log = ("Edge TPU Compiler version 16.0.384591198\nInput: m.tflite\nOutput: m_edgetpu.tflite\n\n"
           "Operator                       Count      Status\n\n"
           "CONV_2D                        35         Mapped to Edge TPU\n"
           "QUANTIZE                       2          Mapped to Edge TPU\n"
           "SHAPE                          1          Operation not supported\n"
           "RESHAPE                        1          More than one subgraph is not supported\n")
    version, total, tpu, cpu, cpu_ops = parse_compiler_output(log)
    assert (version, total, tpu, cpu) == ("16.0.384591198", 39, 37, 2)
    assert cpu_ops == {"SHAPE": 1, "RESHAPE": 1}


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return exe


@pytest.mark.slow
def test_compiler_all_ops_mapped(tmp_path, fake_compiler):
    from converter.convert import convert
    from edge.manifest import load_manifest
    from leukedge.bundle_factory import make_small_run

    run = make_small_run(tmp_path)
    out = convert(run, tmp_path / "b", formats="tflite-edgetpu", max_drop=100.0, progress=False, echo=lambda _m: None)
    manifest = load_manifest(out)
    entry = manifest.file("tflite-edgetpu")
    assert entry.path == "model_int8_edgetpu.tflite" and (out / "edgetpu_compiler.log").is_file()
    assert manifest.edgetpu["compiled"] and manifest.edgetpu["ops_on_cpu"] == 0
    assert manifest.edgetpu["ops_on_edgetpu"] == manifest.edgetpu["ops_total"] > 0
    assert manifest.edgetpu["compiler_version"] == "16.0.384591198"


@pytest.mark.slow
def test_compiler_cpu_fallback_exits_2(tmp_path, fake_compiler, monkeypatch, capsys):
    from converter.convert import convert
    from edge.manifest import load_manifest
    from leukedge.bundle_factory import make_small_run
    from leukedge.cli import main

    monkeypatch.setenv("FAKE_EDGETPU_CPU_OPS", "SOFTMAX")
    run = make_small_run(tmp_path)
    rc = main(["convert", str(run), "--out", str(tmp_path / "b"), "--formats", "tflite-edgetpu", "--max-drop", "100"])
    assert rc == 2 and "fall back to the CPU" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    out = convert(run, tmp_path / "c", formats="tflite-edgetpu", max_drop=100.0, allow_cpu_fallback=True,
                  progress=False, echo=lambda _m: None)
    assert load_manifest(out).edgetpu["cpu_ops"] == {"SOFTMAX": 1}
