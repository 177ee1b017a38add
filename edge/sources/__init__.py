"""Frame sources picked by URI, each in its own module; the watchdog keeps them alive.

    picam: / picam:1            Raspberry Pi camera (picamera2)
    cv:0 / /dev/video0          OpenCV device (USB, V4L2)
    rtsp://... / http(s)://...  network stream through OpenCV
    path/to/video.mp4           video file (ends the run at its end unless loop)
    path/to/folder/             images in name order (ends unless loop)
    path/to/image.png           one image (ends unless loop)
"""

from __future__ import annotations

from pathlib import Path

from edge.sources.base import Frame, Source, SourceBroken, SourceError, SourceLost
from edge.sources.folder import IMAGE_SUFFIXES, FolderSource
from edge.sources.opencv import OpenCVSource
from edge.sources.picam import PicamSource
from edge.sources.watchdog import END, Watchdog

__all__ = ["END", "Frame", "Source", "SourceBroken", "SourceError", "SourceLost", "Watchdog", "make_source",
           "open_watchdog"]


def make_source(uri: str, width: int | None = None, height: int | None = None, stall_s: float = 10.0,
                max_pixels: int | None = None, min_side: int = 0) -> Source:
    """The Source for a URI (not opened yet). `max_pixels` is checked in image file headers;
    `min_side`: how small an image file's JPEG may be decoded."""
    if uri.startswith("picam"):
        return PicamSource(uri, width, height)
    local = not uri.startswith(("cv:", "/dev/video")) and "://" not in uri
    # A path without a suffix is a folder even while it is missing, so a vanished folder is
    # reported as "folder not found" rather than as a missing video file; an image file is
    # a one-image source.
    if local:
        path = Path(uri)
        if path.is_dir() or not (path.suffix or path.exists()) or path.suffix.lower() in IMAGE_SUFFIXES:
            return FolderSource(path, max_pixels, min_side)
    return OpenCVSource(uri, width, height, stall_s)


def open_watchdog(cfg, min_side: int = 0) -> Watchdog:
    """A Watchdog over the source described by an edge.config.SourceConfig, opened."""
    wd = cfg.watchdog
    dog = Watchdog(
        lambda: make_source(cfg.uri, cfg.width, cfg.height, wd.stall_s, cfg.max_pixels, dog.min_side),
        loop=cfg.loop, fps=cfg.fps, backoff_initial_s=wd.backoff_initial_s, backoff_max_s=wd.backoff_max_s,
    )
    dog.set_min_side(min_side)
    return dog.open()
