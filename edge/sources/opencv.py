"""OpenCV capture: USB/V4L2 cameras (`cv:0`, `/dev/video0`), RTSP/HTTP streams and video files.

A stalled stream is detected by OpenCV's own read timeout (set from the watchdog's
`stall_s`), which turns "no frames for N seconds" into a failed read and a reopen.

A video file's failed read is only its end when the frames its header announces have
been read (within END_SLACK). Before that it is a frame that failed to decode (BadFrame,
`corrupt`; FFmpeg often resumes at the next key frame), and after GAP_LIMIT such
failures in a row the file is broken (SourceBroken), which is reported, not taken for
a clean end.

A stream URL (`rtsp://`, `http://`, ...) goes to the FFmpeg backend alone: with any backend
allowed, OpenCV also offers it to its image-sequence reader, whose error message quotes
the URL, password included. Whatever native code prints while a source opens is caught
and logged scrubbed (edge/sources/native_log.py).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from edge.errors import BadFrame
from edge.redact import redact_url
from edge.sources.base import Frame, Source, SourceBroken, SourceError, SourceLost
from edge.sources.native_log import native_output_scrubbed, opened

GAP_LIMIT = 50  # failed reads in a row before a video file counts as broken, not damaged
_STREAM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # scheme://..., not a GStreamer pipeline quoting one
END_SLACK = 0.01  # a header's frame count may overstate the frames by this fraction (and 2 frames)


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
        self._expected = 0  # frames a video file's header announces (0: unknown)
        self._gap = 0  # failed reads in a row

    def open(self) -> "OpenCVSource":
        import cv2

        if not self.live and not Path(self.target).is_file():
            raise SourceError(f"source {self.uri}: video file not found")
        params, api = [], cv2.CAP_ANY
        if isinstance(self.target, str) and "://" in self.target:
            ms = int(self.stall_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            api = cv2.CAP_FFMPEG if _STREAM.match(self.target) else cv2.CAP_ANY
        with native_output_scrubbed(str(self.target)):
            cap = cv2.VideoCapture(self.target, api, params)
        if not cap.isOpened():
            cap.release()
            what = "OpenCV cannot open it" if self.live else "not a folder, video or camera (OpenCV cannot open it)"
            raise SourceError(f"source {self.uri}: {what}")
        opened(str(self.target))
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap, self._index, self._gap = cap, 0, 0
        self._expected = 0 if self.live else max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        if not self.live:  # the pace a replay plays at by default (edge/sources/pace.py)
            rate = cap.get(cv2.CAP_PROP_FPS)
            self.recorded_fps = float(rate) if math.isfinite(rate) and rate > 0 else 0.0
        return self

    def read(self) -> Frame | None:
        import cv2

        t0 = time.perf_counter()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.live:
                raise SourceLost(f"{self.uri}: no frame (unplugged, stream dropped or stalled)")
            return self._failed_read()
        self._gap = 0
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr) if bgr.ndim == 3 and bgr.shape[2] == 3 else bgr
        self._index += 1
        return Frame(rgb, self._index - 1, f"{self.uri}#{self._index - 1}", (time.perf_counter() - t0) * 1e3)

    def _failed_read(self) -> None:
        """A video file's failed read: its end (None), a damaged frame (BadFrame) or a broken file."""
        read = self._index  # frames consumed: decoded ones and failed ones
        at_end = read >= self._expected - max(2, END_SLACK * self._expected)
        if at_end and not self._gap:
            return None
        if at_end or self._gap >= GAP_LIMIT:  # failures ran into the end, or too many in a row
            raise SourceBroken(f"{self.uri}: video stops decoding at frame {read - self._gap} of the "
                               f"{self._expected} its header announces (corrupt or truncated file)")
        self._index += 1
        self._gap += 1
        name = f"{self.uri}#{read}"
        raise BadFrame(f"{name}: video frame failed to decode (corrupt file?)", "corrupt", name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
