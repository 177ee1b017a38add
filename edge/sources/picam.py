"""Raspberry Pi camera through picamera2 (imported only when a `picam:` source is opened).

libcamera calls the byte order [R, G, B] in memory "BGR888", so that is the format
asked for: frames come out RGB with no conversion.
"""

from __future__ import annotations

import time

from edge.sources.base import Frame, Source, SourceError, SourceLost


class PicamSource(Source):
    live = True

    def __init__(self, uri: str = "picam:", width: int | None = None, height: int | None = None):
        self.uri = uri
        tail = uri.split(":", 1)[1] if ":" in uri else ""
        self.camera_num = int(tail) if tail.isdigit() else 0
        self.size = (width or 1280, height or 960)
        self._cam = None
        self._index = 0

    def open(self) -> "PicamSource":
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError("source picam: picamera2 is not installed (apt install python3-picamera2)") from None
        try:
            cam = Picamera2(self.camera_num)
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "BGR888"}))
            cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(f"source {self.uri}: camera not available ({exc})") from None
        self._cam, self._index = cam, 0
        return self

    def read(self) -> Frame | None:
        t0 = time.perf_counter()
        try:
            rgb = self._cam.capture_array("main")
        except (RuntimeError, OSError) as exc:
            raise SourceLost(f"{self.uri}: capture failed ({exc})") from None
        self._index += 1
        return Frame(rgb, self._index - 1, f"{self.uri}#{self._index - 1}", (time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
