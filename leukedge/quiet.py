"""A console for people: third-party chatter goes to a log file, the kit's own lines stay.

TensorFlow, TFLite and XNNPACK write straight to file descriptors 1 and 2 from native code
("oneDNN custom operations are on", "Created TensorFlow Lite XNNPACK delegate",
"fully_quantize: 0, ..."), and Python warnings from those libraries (deprecations, "Statistics
for quantized inputs were expected") arrive by the dozen. In the demo they read as errors. Inside
`chatter_to(path)` both descriptors point at `path`, while Python's sys.stdout and sys.stderr (and
so print, logging, tqdm) write to the real console through duplicates of the original
descriptors, and every Python warning is logged to `path` too. Nothing is dropped: a user who
wants the chatter reads the file. Commands a user runs directly are not wrapped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from edge.sources.native_log import point_handlers

# TensorFlow's C++ INFO lines (oneDNN, CPU features) are not even written with this; warnings still are.
TF_LOG_LEVEL = {"TF_CPP_MIN_LOG_LEVEL": "1"}


@contextlib.contextmanager
def chatter_to(path: Path):
    """Run the block with native output on fds 1 and 2 and Python warnings sent to `path`."""
    for key, value in TF_LOG_LEVEL.items():
        os.environ.setdefault(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    old_streams = sys.stdout, sys.stderr
    with open(path, "ab", buffering=0) as sink:
        sys.stdout = open(saved[1], "w", buffering=1, closefd=False, errors="replace")
        sys.stderr = open(saved[2], "w", buffering=1, closefd=False, errors="replace")
        moved = point_handlers(sys.stderr, fds=(1, 2))
        warned = _warnings_to(path)
        for fd in (1, 2):
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
            _restore_warnings(*warned)
            for handler, stream in moved:
                handler.setStream(stream)
            sys.stdout.close()
            sys.stderr.close()
            sys.stdout, sys.stderr = old_streams
            for copy in saved.values():
                os.close(copy)


def _warnings_to(path: Path):
    """Python warnings become records of the `py.warnings` logger, kept in `path`, not shown."""
    logging.captureWarnings(True)
    logger = logging.getLogger("py.warnings")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    before = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    return logger, handler, before


def _restore_warnings(logger: logging.Logger, handler: logging.Handler, propagate: bool) -> None:
    logger.removeHandler(handler)
    handler.close()
    logger.propagate = propagate
    logging.captureWarnings(False)
