"""Assemble BUNDLE/manifest.json (edge.manifest.Manifest) from what the conversion measured.

The abstain band it records is chosen by edge.thresholds.choose_refer_below, the rule the
trainer's report applies too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge import __version__
from edge.manifest import FileEntry, InputSpec, Manifest, Quant, sha256_file


def file_entry(bundle: Path, path: Path, fmt: str, quant_in: Quant | None = None,
               quant_out: Quant | None = None, **extra) -> FileEntry:
    return FileEntry(path=path.name, format=fmt, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                     input_quant=quant_in, output_quant=quant_out, **extra)


def converter_versions() -> dict[str, str]:
    """The manifest's `versions`: the kit and the conversion libraries that were loaded."""
    out = {"leukedge": __version__}
    for name in ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "ai_edge_litert"):
        mod = sys.modules.get(name)
        ver = getattr(mod, "__version__", None) if mod else None
        if ver:
            out[name] = str(ver)
    return out


def build_manifest(name: str, arch: str, labels: list[str], spec: InputSpec, files: list[FileEntry],
                   metrics: dict, thresholds: dict, training: dict, warnings: list[str], **extra) -> Manifest:
    return Manifest(name=name, arch=arch, labels=labels, input=spec, files=files, metrics=metrics,
                    thresholds=thresholds, training=training, versions=converter_versions(), warnings=warnings, **extra)
