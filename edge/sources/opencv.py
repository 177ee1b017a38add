"""OpenCV capture: USB/V4L2 cameras (`cv:0`, `/dev/video0`), RTSP/HTTP streams and video files.

A stalled stream is detected by OpenCV's own read timeout (set from the watchdog's
`stall_s`), which turns "no frames for N seconds" into a failed read and a reopen.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge.redact import redact_url
from edge.sources.base import Frame, Source, SourceError, SourceLost


class OpenCVSource(Source):
    def __init__(self, uri: str, width: int | None = None, height: int | None = None, stall_s: float = 10.0):
        self.uri = redact_url(uri)  # what logs, errors and frame names show; `target` keeps the credentials
        self.width, self.height, self.stall_s = width, height, stall_s
        self.target: int | str
        if uri.startswith("cv:"):
            self.target, self.live = int(uri[3:] or 0), True
        elif uri.startswith("/dev/video"):
            self.target, self.live = uri, True
        elif "://" in uri:
            self.target, self.live = uri, True
        else:
            self.target, self.live = str(Path(uri)), False
        self._cap = None
        self._index = 0

    def open(self) -> "OpenCVSource":
        import cv2

        if not self.live and not Path(self.target).is_file():
            raise SourceError(f"source {self.uri}: video file not found")
        params = []
        if isinstance(self.target, str) and "://" in self.target:
            ms = int(self.stall_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            what = "OpenCV cannot open it" if self.live else "not a folder, video or camera (OpenCV cannot open it)"
            raise SourceError(f"source {self.uri}: {what}")
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap, self._index = cap, 0
        return self

    def read(self) -> Frame | None:
        import cv2

        t0 = time.perf_counter()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.live:
                raise SourceLost(f"{self.uri}: no frame (unplugged, stream dropped or stalled)")
            return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 and bgr.shape[2] == 3 else bgr
        self._index += 1
        return Frame(rgb, self._index - 1, f"{self.uri}#{self._index - 1}", (time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
