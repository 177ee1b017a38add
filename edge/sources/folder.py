"""Image files as a source: every picture of a folder in name order, or one image file.

Each image is a still capture (`Frame.still`): a deliberate picture, which the gate
checks for focus and blankness but not for stillness. The size in each file's header is
checked against `max_pixels` before the pixels are decoded.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge.errors import BadFrame
from edge.pixels import decode_image, read_bytes
from edge.sources.base import Frame, Source, SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class FolderSource(Source):
    stills = True

    def __init__(self, path: Path, max_pixels: int | None = None, min_side: int = 0):
        self.path = Path(path)
        self.uri = str(path)
        self.max_pixels = max_pixels
        self.min_side = min_side  # large JPEGs decode reduced, short side >= this (edge.pixels.jpeg_reduction_factor)
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> "FolderSource":
        if self.path.suffix.lower() in IMAGE_SUFFIXES and not self.path.is_dir():
            if not self.path.is_file():
                raise SourceError(f"source {self.path}: image file not found")
            self._files = [self.path]
        elif not self.path.is_dir():
            raise SourceError(f"source {self.path}: folder not found")
        else:
            self._files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            raise SourceError(f"source {self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._i = 0
        return self

    def read(self) -> Frame | None:
        if self._i >= len(self._files):
            return None
        path, index = self._files[self._i], self._i
        self._i += 1
        t0 = time.perf_counter()
        try:
            data = read_bytes(path)
            image = decode_image(data, str(path), self.max_pixels, self.min_side)
        except BadFrame as exc:
            exc.frame = path.name  # as the Frame is named
            raise
        return Frame(image, index, path.name, (time.perf_counter() - t0) * 1e3, still=True, file=data)
