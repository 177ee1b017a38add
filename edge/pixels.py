"""The pixels a model sees: decoding, frame checks, the reductions and `preprocess`.

The trainer's evaluation, the converter's validation and the edge agent all call
`preprocess` from here, so the tensor a model sees is the same everywhere (a parity
test holds them equal). What each step costs, and the command that measured it, is in
docs/edge.md ("Camera-size frames"). numpy at import; OpenCV and Pillow inside the
functions that need them, so that importing the manifest's contract stays light.

Three sizes of reduction, which differ in what they act on:
- `reduction_factor`: the arithmetic, which of 8, 4, 2 or 1 keeps a short side large enough;
- `jpeg_reduction_factor`: that factor for an encoded JPEG, for libjpeg's scaled decoding;
- `reduce_like_jpeg`: the same reduction done on a decoded frame (a camera's), by
  `box_shrink`, the whole-factor box average that `preprocess` and the gate use too.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from edge import stain
from edge.errors import BadFrame
from edge.manifest import InputSpec

MIN_SIDE = 16  # pixels: below this a frame holds no cell worth classifying


# --------------------------------------------------------------------------- frame checks


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


def check_size(width: int, height: int, max_pixels: int | None = None) -> None:
    """BadFrame unless both sides are at least MIN_SIDE and the pixel count is within `max_pixels`."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise BadFrame(f"frame {width}x{height} is too small (under {MIN_SIDE} px a side)", "too_small")
    if max_pixels and width * height > max_pixels:
        raise BadFrame(f"frame {width}x{height} has {width * height / 1e6:.1f} MP, over source.max_pixels "
                       f"({max_pixels / 1e6:g} MP)", "too_large")


# --------------------------------------------------------------------------- model input


def center_square(frame: np.ndarray, multiple: int = 1) -> np.ndarray:
    """The centred square of a frame, its side trimmed to a multiple of `multiple` (< `multiple` px lost)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    side -= side % multiple
    top, left = (h - side) // 2, (w - side) // 2
    return frame[top : top + side, left : left + side]


def preprocess(frame: np.ndarray, spec: InputSpec | int = 224) -> np.ndarray:
    """Frame (HxWx3 uint8 RGB, any size) -> model input (spec.height x spec.width x 3 uint8).

    Checks the frame (`as_rgb_uint8`), then `preprocess_rgb`. An int `spec` is a square
    model size without stain normalisation.
    """
    if isinstance(spec, int):
        spec = InputSpec(height=spec, width=spec)
    return preprocess_rgb(as_rgb_uint8(frame), spec)


def preprocess_rgb(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """`preprocess` for a frame already checked by `as_rgb_uint8` (the agent checks each frame once).

    Centre square crop, then down to the model size in two steps: a box average by the
    largest whole factor that stays at or above the model size (`box_shrink`), then one
    small bilinear resize for the rest, a ratio under 2 (1280x960: 960 -> 240 -> 224).
    The square's side is trimmed to a multiple of that factor (at most factor - 1
    pixels, so the field of view is the same square to within a pixel or two): OpenCV's
    area resize is fast only for a factor of 2 and slow for a ratio that is not whole.
    Then the manifest's stain normalisation if any. No scaling to floats: that is a
    layer inside the model.
    """
    import cv2

    factor = max(1, min(rgb.shape[:2]) // max(spec.height, spec.width))
    rgb = box_shrink(center_square(rgb, factor), factor)
    if rgb.shape[0] != spec.height or rgb.shape[1] != spec.width:
        rgb = cv2.resize(rgb, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    if spec.stain_norm.method != "none":
        rgb = stain.normalize(rgb, spec.stain_norm)
    return np.ascontiguousarray(rgb)


def box_shrink(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-average `img` (grey or RGB) by a whole factor; rows and columns past a multiple
    of it are dropped. Halves while the factor is even (OpenCV's SIMD path for 2x is
    faster than one 4x INTER_AREA and agrees with it to one grey level), then one
    INTER_AREA for an odd rest. The gate's analysis copy and `preprocess` use it."""
    import cv2

    while factor > 1:
        step = 2 if factor % 2 == 0 else factor
        h, w = img.shape[0] // step, img.shape[1] // step
        img = cv2.resize(img[: h * step, : w * step], (w, h), interpolation=cv2.INTER_AREA)
        factor //= step
    return img


# --------------------------------------------------------------------------- reductions before the gate


def frame_min_side(spec: InputSpec, analysis_width: int) -> int:
    """How small a frame may be reduced before the gate and preprocess: the model input and
    the gate's analysis copy both still come from whole pixels of it. It changes only with
    the bundle, so the agent computes it at start and at a bundle switch."""
    return max(spec.height, spec.width, analysis_width)


def reduction_factor(side: int, min_side: int) -> int:
    """1, 2, 4 or 8: the largest that keeps a short side of `side` at or above `min_side`."""
    return next((k for k in (8, 4, 2) if min_side > 0 and side // k >= min_side), 1)


def jpeg_reduction_factor(data: bytes, min_side: int) -> int:
    """1, 2, 4 or 8: the largest JPEG decoding reduction that keeps the short side >= `min_side`.

    Only for colour JPEGs (read from the header by Pillow, without decoding): libjpeg
    then decodes straight at 1/2, 1/4 or 1/8 size, much faster than a full decode that
    preprocess would shrink anyway. Grayscale, CMYK and other formats decode in full, so
    they are refused or converted exactly as before.
    """
    if min_side <= 0 or data[:2] != b"\xff\xd8":
        return 1
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
    return reduction_factor(side, min_side)


def reduce_like_jpeg(rgb: np.ndarray, min_side: int) -> np.ndarray:
    """A decoded frame box-averaged by 2, 4 or 8 (`box_shrink`), its short side kept >= `min_side`:
    what libjpeg's reduced decoding does for a large JPEG, so camera frames and files reach
    the gate and `preprocess` alike, and those then work on a fraction of the pixels. The
    first rows and columns are dropped (< k) so that the blocks line up with `preprocess`'s
    centre square: for a 224 px model the input is the one the full frame gives, pixel for pixel."""
    k = reduction_factor(min(rgb.shape[:2]), min_side)
    if k == 1:
        return rgb
    h, w = rgb.shape[:2]
    side = min(h, w) - min(h, w) % k
    return box_shrink(rgb[(h - side) // 2 % k:, (w - side) // 2 % k:], k)


# --------------------------------------------------------------------------- decoding


def check_header(data: bytes, max_pixels: int) -> None:
    """BadFrame when the size in an encoded image's header is over `max_pixels` (or tiny).

    Pillow parses only the header on open (JPEG, PNG, BMP, TIFF, WebP, ...), so no pixel
    is decoded. A header Pillow cannot parse passes: the decoded frame is checked instead.
    """
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


_REDUCED = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None, min_side: int = 0) -> np.ndarray:
    """Encoded bytes (JPEG, PNG, ...) -> HxWx3 uint8 RGB, or BadFrame naming `name`.

    With `max_pixels`, the size in the file header is checked before decoding, so a small
    file that would expand to gigabytes is refused without allocating them. With
    `min_side`, a large colour JPEG is decoded at a reduced size whose short side stays
    >= min_side (see jpeg_reduction_factor); 0 always decodes in full.
    """
    import cv2

    if not data:
        raise BadFrame(f"{name}: empty file", "empty", name)
    try:
        if max_pixels:
            check_header(data, max_pixels)
        try:
            k = jpeg_reduction_factor(data, min_side)
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
