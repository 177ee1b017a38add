"""An image folder as a source: every picture in name order (a replay source for tests and benchmarks)."""

from __future__ import annotations

import time
from pathlib import Path

from edge.bundle import read_image
from edge.sources.base import Frame, Source, SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class FolderSource(Source):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.uri = str(path)
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> "FolderSource":
        if not self.path.is_dir():
            raise SourceError(f"source {self.path}: folder not found")
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
        image = read_image(path)
        return Frame(image, index, path.name, (time.perf_counter() - t0) * 1e3)
