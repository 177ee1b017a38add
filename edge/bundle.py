"""The one definition of a deployable model: labels, manifest schema and preprocessing.

The trainer's evaluation, the converter's validation and the edge agent all call
`preprocess` from here, so the tensor a model sees is the same everywhere (a parity
test holds them equal). Importing this module is cheap: numpy, pydantic, and OpenCV
only when a function that needs it is called.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import BadFrame, BundleError, first_problem
from edge.formats import FORMATS
from edge.postprocess import PostProcess, postprocess  # noqa: F401 - the one post-processing rule, re-exported
from edge.selftest import FORMAT as SELFTEST_FORMAT

LABELS: tuple[str, ...] = ("Benign", "Early", "Pre", "Pro")
SCHEMA_VERSION = 1
MAX_RELEASE = 2**31 - 1  # a release fits every int32 a fleet tool stores; a huge one would lock out every later one
MANIFEST = "manifest.json"
Format = Literal[(*FORMATS, SELFTEST_FORMAT)]  # the model formats (edge.formats.TABLE) and selftest.npz


class StainNorm(BaseModel):
    """Per-image colour normalisation applied after crop/resize (see edge/stain.py)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "reinhard", "macenko"] = "none"
    target: dict[str, list[float] | list[list[float]]] = Field(default_factory=dict)


class InputSpec(BaseModel):
    """What the model file takes: uint8 RGB HxWx3, after a centre square crop and INTER_AREA resize (see preprocess)."""

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


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    name: str
    arch: Literal["mobilenetv2", "custom_cnn"]
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

    def file(self, fmt: str) -> FileEntry:
        for entry in self.files:
            if entry.format == fmt:
                return entry
        have = ", ".join(e.format for e in self.files) or "none"
        raise BundleError(f"bundle {self.name!r} has no {fmt} file (has: {have})")


# --------------------------------------------------------------------------- frames


def as_rgb_uint8(frame: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """Check a decoded frame and return it as HxWx3 uint8 RGB.

    RGBA loses its alpha channel; grayscale, 16-bit, float, empty, tiny frames and frames
    over `max_pixels` are refused with a BadFrame naming the problem (a smear classifier
    has no use for them, and guessing a rescale would hide a misconfigured camera).
    """
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise BadFrame("empty frame", "empty")
    if frame.dtype != np.uint8:
        raise BadFrame(f"frame dtype is {frame.dtype}, expected uint8 (8-bit RGB)", "bit_depth")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise BadFrame(f"grayscale frame {frame.shape}, expected colour RGB", "grayscale")
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise BadFrame(f"frame shape {frame.shape}, expected HxWx3 RGB", "shape")
    check_size(frame.shape[1], frame.shape[0], max_pixels)
    return frame[:, :, :3]


MIN_SIDE = 16  # pixels: below this a frame holds no cell worth classifying


def check_size(width: int, height: int, max_pixels: int | None = None) -> None:
    """BadFrame unless both sides are at least MIN_SIDE and the pixel count is within `max_pixels`."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise BadFrame(f"frame {width}x{height} is too small (under {MIN_SIDE} px a side)", "too_small")
    if max_pixels and width * height > max_pixels:
        raise BadFrame(f"frame {width}x{height} has {width * height / 1e6:.1f} MP, over source.max_pixels "
                       f"({max_pixels / 1e6:g} MP)", "too_large")


def center_square(frame: np.ndarray, multiple: int = 1) -> np.ndarray:
    """The centred square of a frame, its side trimmed to a multiple of `multiple` (< `multiple` px lost)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    side -= side % multiple
    top, left = (h - side) // 2, (w - side) // 2
    return frame[top : top + side, left : left + side]


def preprocess(frame: np.ndarray, spec: InputSpec | int = 224) -> np.ndarray:
    """Frame (HxWx3 uint8 RGB, any size) -> model input (spec.height x spec.width x 3 uint8).

    Centre square crop, then down to the model size in two steps: an area shrink by the
    largest whole factor that stays at or above the model size (`area_shrink`), then one
    small bilinear resize for the rest, a ratio under 2 (1280x960: 960 -> 240 -> 224).
    The square's side is trimmed to a multiple of that factor (at most factor - 1
    pixels, so the field of view is the same square to within a pixel or two). Then
    the manifest's stain normalisation if any. No scaling to floats: that is a
    layer inside the model. Speed (one OpenCV thread, 1280x960): 0.7 ms against 2.9 ms
    for one INTER_AREA by 4 and an INTER_AREA finish (OpenCV's area resize is fast only
    for a factor of 2, and slow for a ratio that is not whole).
    """
    import cv2

    if isinstance(spec, int):
        spec = InputSpec(height=spec, width=spec)
    rgb = as_rgb_uint8(frame)
    factor = max(1, min(rgb.shape[:2]) // max(spec.height, spec.width))
    rgb = area_shrink(center_square(rgb, factor), factor)
    if rgb.shape[0] != spec.height or rgb.shape[1] != spec.width:
        rgb = cv2.resize(rgb, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    if spec.stain_norm.method != "none":
        from edge import stain  # edge.stain imports StainNorm from here

        rgb = stain.normalize(rgb, spec.stain_norm)
    return np.ascontiguousarray(rgb)


def area_shrink(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-average `img` (grey or RGB) by a whole factor; rows and columns past a multiple
    of it are dropped. Halves while the factor is even (OpenCV's SIMD path for 2x is
    about three times faster than one 4x INTER_AREA and agrees with it to one grey level),
    then one INTER_AREA for an odd rest. The gate's analysis copy and `preprocess` use it."""
    import cv2

    while factor > 1:
        step = 2 if factor % 2 == 0 else factor
        h, w = img.shape[0] // step, img.shape[1] // step
        img = cv2.resize(img[: h * step, : w * step], (w, h), interpolation=cv2.INTER_AREA)
        factor //= step
    return img


def check_header(data: bytes, max_pixels: int) -> None:
    """BadFrame when the size in an encoded image's header is over `max_pixels` (or tiny).

    Pillow parses only the header on open (JPEG, PNG, BMP, TIFF, WebP, ...), so no pixel
    is decoded. A header Pillow cannot parse passes: the decoded frame is checked instead.
    """
    import io
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Image.DecompressionBombError:  # over Pillow's own hard limit, which hides the size
            limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            if max_pixels < limit:
                raise BadFrame(f"image header claims over {limit / 1e6:.0f} MP, over source.max_pixels "
                               f"({max_pixels / 1e6:g} MP)", "too_large") from None
            return
        except Exception:  # noqa: BLE001 - any parse failure means "unknown", decided by the decoder
            return
    check_size(width, height, max_pixels)


def jpeg_reduction(data: bytes, min_side: int) -> int:
    """1, 2, 4 or 8: the largest JPEG decoding reduction that keeps the short side >= `min_side`.

    Only for colour JPEGs (read from the header by Pillow, without decoding): libjpeg
    then decodes straight at 1/2, 1/4 or 1/8 size, three to four times faster than a
    full decode that preprocess would shrink anyway. Grayscale, CMYK and other formats
    decode in full, so they are refused or converted exactly as before.
    """
    if min_side <= 0 or data[:2] != b"\xff\xd8":
        return 1
    import io
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is max_pixels' business
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG" or im.mode != "RGB":
                    return 1
                side = min(im.size)
        except Exception:  # noqa: BLE001 - any parse failure: decode in full, the decoder decides
            return 1
    return reduction(side, min_side)


def reduction(side: int, min_side: int) -> int:
    """1, 2, 4 or 8: the largest that keeps a short side of `side` at or above `min_side`."""
    return next((k for k in (8, 4, 2) if min_side > 0 and side // k >= min_side), 1)


def frame_min_side(spec: InputSpec, analysis_width: int) -> int:
    """How small a frame may be reduced before the gate and preprocess: the model input and
    the gate's analysis copy both still come from whole pixels of it."""
    return max(spec.height, spec.width, analysis_width)


def reduce_frame(rgb: np.ndarray, min_side: int) -> np.ndarray:
    """A raw frame box-averaged by 2, 4 or 8 (2x halvings, `area_shrink`), its short side
    kept >= `min_side`: what libjpeg's reduced decoding does for a large JPEG, so camera
    frames and files reach the gate and `preprocess` alike, and those then work on a
    sixteenth of the pixels (1280x960: 1.6 -> 0.7 ms, docs/edge.md). The first rows and
    columns are dropped (< k) so that the blocks line up with `preprocess`'s centre square:
    for a 224 px model the input is the one the full frame gives, pixel for pixel."""
    k = reduction(min(rgb.shape[:2]), min_side)
    if k == 1:
        return rgb
    h, w = rgb.shape[:2]
    side = min(h, w) - min(h, w) % k
    return area_shrink(rgb[(h - side) // 2 % k:, (w - side) // 2 % k:], k)


_REDUCED = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None, min_side: int = 0) -> np.ndarray:
    """Encoded bytes (JPEG, PNG, ...) -> HxWx3 uint8 RGB, or BadFrame naming `name`.

    With `max_pixels`, the size in the file header is checked before decoding, so a small
    file that would expand to gigabytes is refused without allocating them. With
    `min_side`, a large colour JPEG is decoded at a reduced size whose short side stays
    >= min_side (see jpeg_reduction); 0 always decodes in full.
    """
    import cv2

    if not data:
        raise BadFrame(f"{name}: empty file", "empty", name)
    try:
        if max_pixels:
            check_header(data, max_pixels)
        try:
            k = jpeg_reduction(data, min_side)
            flag = getattr(cv2, _REDUCED[k]) if k > 1 else cv2.IMREAD_UNCHANGED
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        except cv2.error:  # OpenCV refuses some malformed headers by raising instead of returning None
            img = None
        if img is None:
            raise BadFrame("not a decodable image (corrupt or truncated?)", "corrupt")
        if img.ndim == 3 and img.shape[2] == 4:  # in place: no second copy of a large frame
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA, dst=img)
        elif img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)
        return as_rgb_uint8(img, max_pixels)
    except BadFrame as exc:
        raise BadFrame(f"{name}: {exc}", exc.reason, name) from None


def read_bytes(path: str | Path) -> bytes:
    """An image file's bytes; BadFrame naming the file if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadFrame(f"{path}: cannot read ({exc.strerror or exc})", "unreadable", str(path)) from None


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; BadFrame (naming the file) if it cannot be used."""
    return decode_image(read_bytes(path), str(path), max_pixels)


# --------------------------------------------------------------------------- bundles


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
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise BundleError(f"{path}: JSON nested too deeply") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: top level must be a JSON object, got {_json_kind(data)}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{path}: field {first_problem(exc)}") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {manifest.schema_version}, this agent reads {SCHEMA_VERSION}")
    if len(manifest.labels) != len(set(manifest.labels)) or not manifest.labels:
        raise BundleError(f"{path}: labels {manifest.labels} must be a non-empty list of unique names")
    shift = manifest.postprocess.log_prior_shift
    if shift is not None and len(shift) != len(manifest.labels):
        raise BundleError(f"{path}: postprocess.log_prior_shift has {len(shift)} numbers for {len(manifest.labels)} labels")
    return manifest


def _json_kind(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


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
