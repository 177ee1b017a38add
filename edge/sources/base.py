"""What a frame source yields, and the errors that tell the watchdog what happened."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge.errors import BadInput


class Frame(NamedTuple):
    image: np.ndarray  # RGB as delivered; the loop checks it with edge.pixels.as_rgb_uint8
    index: int  # frame number since the source was opened
    name: str  # file name, or "<uri>#<index>" for cameras and streams
    decode_ms: float  # time to capture or decode this frame
    still: bool = False  # a still capture (an image file): the gate skips its stillness test
    file: bytes | None = None  # the encoded image file as read (file sources): frame.sha256 is over these bytes


class SourceError(BadInput):
    """The source cannot be opened (missing file, no camera, refused stream)."""


class SourceLost(Exception):
    """A live source stopped delivering (unplugged camera, dropped or stalled stream)."""


class SourceBroken(Exception):
    """A finite source failed before its end (a video corrupt or truncated part-way): not a clean end."""


class Source:
    """A frame source. `read()` returns a Frame, None at end of stream, or raises BadFrame
    (skip and count this frame), SourceLost (reopen me) or SourceBroken (a file that
    cannot be read to its end)."""

    uri: str = ""
    live: bool = False  # cameras and streams: end of stream means reopen, never stop
    stills: bool = False  # image files: each frame a separate capture, with no frame rate of its own
    recorded_fps: float | None = None  # a video file's frame rate as its header gives it (0: none given)

    def open(self) -> "Source":
        return self

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""
