"""Edge TPU: a readiness check on every int8 TFLite file, and the compiler when it is installed.

The readiness check reads the flatbuffer itself, so it runs everywhere (the compiler only
exists for x86-64 Linux): no float32 tensors, QUANTIZE only at the graph's edges, only
ops on the Edge TPU's supported list, static shapes, activations with at most 3 (innermost) dimensions larger than 1,
and the op versions (the 2022 compiler rejects op versions newer TensorFlow emits, so we
list them for the person reading the report).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import BadInput

# Coral's "supported operations" table (coral.ai/docs/edgetpu/models-intro), as TFLite
# builtin names. Anything else runs on the CPU (or splits the graph).
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
COMPILER = "edgetpu_compiler"


@dataclass
class Readiness:
    ok: bool
    problems: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    op_versions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def check_readiness(data: bytes) -> Readiness:
    """Check a TFLite flatbuffer against the Edge TPU's rules (see module docstring)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(code, f"OP_{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(oc.CustomCode() or b'?').decode()}"
        codes.append((name, oc.Version()))

    problems: list[str] = []
    ops: dict[str, int] = {}
    versions: dict[str, int] = {}
    g = model.Subgraphs(0)
    graph_in = set(g.InputsAsNumpy().tolist())
    graph_out = set(g.OutputsAsNumpy().tolist())
    for t in range(g.TensorsLength()):
        tensor = g.Tensors(t)
        name = (tensor.Name() or b"").decode()
        ttype = type_names.get(tensor.Type(), str(tensor.Type()))
        if ttype == "FLOAT32":
            problems.append(f"tensor {name!r} is float32")
        sig = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
        shape = [int(d) for d in (sig if not isinstance(sig, int) else [])]
        if any(d < 0 for d in shape):
            problems.append(f"tensor {name!r} has a dynamic shape {shape}")
        constant = model.Buffers(tensor.Buffer()).DataLength() > 0 if tensor.Buffer() else False
        if not constant and any(d > 1 for d in shape[:-3]):  # weights are 4-D by nature; activations may not be
            problems.append(f"tensor {name!r} has {sum(d > 1 for d in shape)} dimensions > 1 {shape} "
                            "(Edge TPU: only the 3 innermost may exceed 1)")
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        name, version = codes[op.OpcodeIndex()]
        ops[name] = ops.get(name, 0) + 1
        versions[name] = max(version, versions.get(name, 0))
        if name not in EDGETPU_OPS:
            problems.append(f"op #{k} {name} is not supported by the Edge TPU")
        if name == "QUANTIZE":
            ins, outs = set(op.InputsAsNumpy().tolist()), set(op.OutputsAsNumpy().tolist())
            if not (ins & graph_in or outs & graph_out):
                problems.append(f"op #{k} QUANTIZE sits inside the graph (only allowed at the input/output)")
    if model.SubgraphsLength() != 1:
        problems.append(f"model has {model.SubgraphsLength()} subgraphs (Edge TPU: 1)")
    return Readiness(ok=not problems, problems=problems, ops=dict(sorted(ops.items())), op_versions=dict(sorted(versions.items())))


# --------------------------------------------------------------------------- compiler


@dataclass
class Compiled:
    path: Path
    log_path: Path | None
    version: str
    ops_total: int
    ops_on_tpu: int
    ops_on_cpu: int
    cpu_ops: dict[str, int]

    def summary(self) -> dict:
        return {
            "compiled": True, "compiler_version": self.version, "ops_total": self.ops_total,
            "ops_on_edgetpu": self.ops_on_tpu, "ops_on_cpu": self.ops_on_cpu, "cpu_ops": self.cpu_ops,
        }


def compiler_path() -> str | None:
    return shutil.which(COMPILER)


def parse_compiler_output(text: str) -> tuple[str, int, int, int, dict[str, int]]:
    """(version, total, on Edge TPU, on CPU, {op: count not mapped}) from the compiler's stdout/log.

    The per-operator table ("Operator  Count  Status") is authoritative; the summary lines
    ("Number of operations that will run on ...") are used when the table is absent.
    """
    version = (re.search(r"Edge TPU Compiler version (\S+)", text) or [None, "unknown"])[1]
    on_tpu = on_cpu = 0
    cpu_ops: dict[str, int] = {}
    table = re.findall(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$", text, flags=re.M)
    for op, count, status in table:
        if status.startswith("Mapped to Edge TPU"):
            on_tpu += int(count)
        else:
            on_cpu += int(count)
            cpu_ops[op] = cpu_ops.get(op, 0) + int(count)
    if not table:
        m_tpu = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", text)
        m_cpu = re.search(r"Number of operations that will run on CPU:\s*(\d+)", text)
        m_all = re.search(r"Total number of operations:\s*(\d+)", text)
        total = int(m_all[1]) if m_all else 0
        on_cpu = int(m_cpu[1]) if m_cpu else 0
        on_tpu = int(m_tpu[1]) if m_tpu else total - on_cpu
    return version, on_tpu + on_cpu, on_tpu, on_cpu, cpu_ops


def compile_model(int8_path: Path, out_dir: Path, timeout_s: int = 600) -> Compiled:
    """Run edgetpu_compiler on an int8 TFLite file; BadInput if it fails."""
    exe = compiler_path()
    if exe is None:
        raise BadInput(f"{COMPILER} is not on PATH")
    proc = subprocess.run(
        [exe, "-s", "-o", str(out_dir), str(int8_path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    out = out_dir / f"{int8_path.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise BadInput(f"{int8_path.name}: {COMPILER} failed (exit {proc.returncode}): {last}")
    log_path = out_dir / f"{int8_path.stem}_edgetpu.log"
    text = proc.stdout + "\n" + (log_path.read_text() if log_path.is_file() else "")
    version, total, on_tpu, on_cpu, cpu_ops = parse_compiler_output(
        log_path.read_text() if log_path.is_file() else proc.stdout
    )
    if version == "unknown":
        version = parse_compiler_output(text)[0]
    return Compiled(out, log_path if log_path.is_file() else None, version, total, on_tpu, on_cpu, cpu_ops)
