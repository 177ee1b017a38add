"""The one definition of a deployable model's bundle: labels, the manifest schema, and reading it.

The trainer, the converter and the agent all describe a bundle with these classes, and
every reader of a bundle's files gets their paths from `bundle_path`, which keeps them
inside the bundle. The pixels the model sees are edge.pixels' business. Importing this
module is cheap: pydantic and the standard library.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import BundleError, json_object, validated
from edge.formats import FORMATS
from edge.ood import FORMAT as OOD_FORMAT
from edge.ood import OodSection
from edge.postprocess import PostProcess
from edge.selftest import FORMAT as SELFTEST_FORMAT
from edge.stain import StainNorm

LABELS: tuple[str, ...] = ("Benign", "Early", "Pre", "Pro")
ARCH_NAMES: tuple[str, ...] = ("mobilenetv2", "custom_cnn")  # what a manifest's `arch` may say
SCHEMA_VERSION = 1
MAX_RELEASE = 2**31 - 1  # a release fits every int32 a fleet tool stores; a huge one would lock out every later one
MANIFEST = "manifest.json"
Format = Literal[(*FORMATS, SELFTEST_FORMAT, OOD_FORMAT)]  # model formats (edge.formats.TABLE), selftest.npz, ood.npz


class InputSpec(BaseModel):
    """What the model file takes: uint8 RGB HxWx3, after a centre square crop and INTER_AREA resize
    (edge.pixels.preprocess)."""

    model_config = ConfigDict(extra="forbid")
    height: int = Field(224, ge=16, le=4096)
    width: int = Field(224, ge=16, le=4096)
    color: Literal["RGB"] = "RGB"
    dtype: Literal["uint8"] = "uint8"
    crop: Literal["center-square"] = "center-square"
    resize: Literal["INTER_AREA"] = "INTER_AREA"
    stain_norm: StainNorm = Field(default_factory=StainNorm)


class Quant(BaseModel):
    scale: float
    zero_point: int


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str
    format: Format
    sha256: str
    size_bytes: int | None = None
    input_quant: Quant | None = None
    output_quant: Quant | None = None


class Thresholds(BaseModel):
    """The abstain band: a decision is `refer` when the top probability is below `refer_below`."""

    model_config = ConfigDict(extra="allow")
    refer_below: float = Field(0.5, ge=0.0, le=1.0)
    min_fields: int | None = Field(None, ge=1)  # a suggested samples.min_fields (the box's config wins)
    # the slide decision's cut-off on pooled probabilities; None (older bundles) = refer_below
    sample_refer_below: float | None = Field(None, ge=0.0, le=1.0)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    name: str
    arch: Literal[ARCH_NAMES]
    labels: list[str] = Field(default_factory=lambda: list(LABELS))
    input: InputSpec = Field(default_factory=InputSpec)
    files: list[FileEntry] = Field(default_factory=list)
    metrics: dict[str, dict] = Field(default_factory=dict)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    postprocess: PostProcess = Field(default_factory=PostProcess)  # absent = identity
    training: dict = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    release: int | None = Field(None, ge=1, le=MAX_RELEASE)  # set by `leukedge sign`; monotonic per lab
    ood: OodSection | None = None  # the unfamiliar-input guard (edge/ood.py); absent = off

    def file(self, fmt: str) -> FileEntry:
        for entry in self.files:
            if entry.format == fmt:
                return entry
        have = ", ".join(e.format for e in self.files) or "none"
        raise BundleError(f"bundle {self.name!r} has no {fmt} file (has: {have})")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n")
    return path


def load_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read BUNDLE/manifest.json; with verify, check every listed file is inside the bundle and matches its sha256."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: no manifest (is {bundle_dir} a leukedge bundle?)")
    manifest = parse_manifest(path)
    if verify:
        for entry in manifest.files:
            verify_file(bundle_dir, entry)
    return manifest


def parse_manifest(path: Path) -> Manifest:
    """The Manifest in `path`, or BundleError with one line naming the file and what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    manifest = validated(Manifest, json_object(raw, str(path), BundleError), str(path), BundleError)
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {manifest.schema_version}, this agent reads {SCHEMA_VERSION}")
    if len(manifest.labels) != len(set(manifest.labels)) or not manifest.labels:
        raise BundleError(f"{path}: labels {manifest.labels} must be a non-empty list of unique names")
    shift = manifest.postprocess.log_prior_shift
    if shift is not None and len(shift) != len(manifest.labels):
        raise BundleError(f"{path}: postprocess.log_prior_shift has {len(shift)} numbers for {len(manifest.labels)} labels")
    return manifest


def bundle_path(bundle_dir: str | Path, entry: FileEntry) -> Path:
    """The real path of the file a manifest entry names, if it is a regular file inside the bundle.

    A manifest comes from outside: an absolute path, `..` or a symlink must never make a
    reader open or hash a file elsewhere on the box. Every reader of a bundle's files (the
    agent, `--check`, `bench`, robustness) gets its paths from here.
    """
    root = Path(bundle_dir).resolve()
    where = f"{Path(bundle_dir) / MANIFEST}: files entry {entry.format} path {entry.path!r}"
    if not entry.path or Path(entry.path).is_absolute():
        raise BundleError(f"{where}: must be a path relative to the bundle folder")
    try:
        real = (root / entry.path).resolve(strict=True)
    except FileNotFoundError:
        raise BundleError(f"{where}: missing") from None
    except (OSError, RuntimeError, ValueError) as exc:  # loops, NUL bytes, permissions
        raise BundleError(f"{where}: cannot be resolved ({exc})") from None
    if not real.is_relative_to(root):
        raise BundleError(f"{where}: resolves outside the bundle folder")
    if not real.is_file():
        raise BundleError(f"{where}: not a regular file")
    return real


def verify_file(bundle_dir: str | Path, entry: FileEntry) -> Path:
    """Real path of a bundle file after checking it is inside the bundle and its sha256 matches."""
    path = bundle_path(bundle_dir, entry)
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise BundleError(
            f"{Path(bundle_dir) / entry.path}: sha256 mismatch (manifest {entry.sha256[:12]}..., "
            f"file {digest[:12]}...): the file changed after the bundle was made"
        )
    return path
