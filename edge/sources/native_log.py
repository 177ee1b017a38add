"""Native libraries' own stderr lines while a source opens: caught at the file descriptor,
scrubbed of the source's credentials, and logged by us.

OpenCV and FFmpeg write straight to fd 2, past Python's logging and its redaction, and an
error there may quote the URI it was given, password included (OpenCV's image-sequence
reader did: "CAP_IMAGES: ... got: http://viewer:secret@..."). Under systemd that is the
journal, often shipped off the box. While a source opens, fd 2 points at a temporary file
and Python's own log handlers write to the real stderr, so the file holds only native
lines; they come back as one log line with the credentials replaced by ***, a warning
when it differs from the last one for that source since it last opened, else a debug line
(a retry every few seconds repeats them): one warning per state change, not per retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading

from edge.redact import redact_url, scrub

log = logging.getLogger("edge.sources")
MAX_CHARS = 600  # of the re-emitted line
_capture = threading.Lock()  # fd 2 is the process's: one capture at a time
_last: dict[str, str] = {}  # safe URI -> the last native message logged for it
_NOISE = re.compile(r" @ 0x[0-9a-f]+|:\d+@\d+\.\d+")  # pointers and timestamps: a repeat reads as one


@contextlib.contextmanager
def native_output_scrubbed(uri: str):
    """Run the block with fd 2 captured; log what native code wrote there, scrubbed of `uri`'s secrets."""
    with _capture, _sink() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        real = open(saved, "w", buffering=1, closefd=False, errors="replace")
        moved = point_handlers(real)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            for handler, stream in moved:
                handler.setStream(stream)
            real.close()
            os.close(saved)
            sink.seek(0)
            captured = sink.read(64 * 1024).decode(errors="replace")
    _report(uri, captured)


def opened(uri: str) -> None:
    """The source is up again: its next failure is a new state, so its first message warns again."""
    _last.pop(redact_url(uri), None)


def _sink():
    """A temporary file for the native lines; on a full or read-only disk, /dev/null (dropped, not shown)."""
    try:
        return tempfile.TemporaryFile()
    except OSError:
        return open(os.devnull, "w+b")


def point_handlers(stream, fds: tuple[int, ...] = (2,)) -> list[tuple[logging.StreamHandler, object]]:
    """Root log handlers that write to one of `fds` now write to `stream` (returned: what to restore)."""
    moved = []
    for handler in logging.getLogger().handlers:
        target = getattr(handler, "stream", None)
        try:
            on_fd = isinstance(handler, logging.StreamHandler) and target.fileno() in fds
        except (AttributeError, OSError, ValueError):
            on_fd = False
        if on_fd:
            moved.append((handler, handler.setStream(stream)))
    return moved


def _report(uri: str, captured: str) -> None:
    lines = [_NOISE.sub("", line).strip() for line in captured.splitlines()]
    text = " | ".join(line for line in lines if line)
    if not text:
        return
    safe = redact_url(uri)
    text = scrub(text, uri)[:MAX_CHARS]  # scrubbed before it is cut, so no secret is cut in half
    level = logging.DEBUG if _last.get(safe) == text else logging.WARNING
    _last[safe] = text
    log.log(level, "source %s: the video backend said: %s", safe, text)
