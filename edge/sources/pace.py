"""How fast a file or folder plays: the pace the watchdog holds a source to (`source.fps`, `--fps`).

A replayed file stands in for a camera, so by default it plays as a camera would deliver
it: a video at its container's frame rate. Unpaced, a looped video ran at 2,000 frames/s
on one core and filled the outbox with tens of thousands of repeats in minutes.

    auto (default)  a video file: its container's frame rate (25 when the header has none
                    or an absurd one); a looped folder or image: 2 images/s; a folder played
                    once: unpaced (a batch of still captures, done as fast as the box can,
                    and it ends); a camera or stream: never paced (it delivers at its own rate)
    N               N frames/s for files and folders (any N > 0)
    max             unpaced: as fast as the box can (benchmarks, tests)

Why 2 images/s for a looped folder: a folder has no frame rate, and each of its images is
a separate field; two a second keeps a demo or soak readable on the station page and the
outbox small (~170,000 results a day instead of millions), while still faster than any
technician moves a slide.
"""

from __future__ import annotations

import math

AUTO, MAX = "auto", "max"
STILLS_FPS = 2.0  # a looped folder's default pace (images/s)
VIDEO_FALLBACK_FPS = 25.0  # a video whose header gives no usable frame rate
VIDEO_FPS_RANGE = (0.5, 240.0)  # a container's rate outside this is taken as unreadable (some say 90000)


def parse_fps(value) -> float | str:
    """`auto`, `max` or a frame rate > 0: what `source.fps` and `--fps` accept (ValueError otherwise)."""
    if value is None:
        return AUTO
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (AUTO, MAX):
            return text
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not a frame rate: give a number > 0, 'max' (unpaced) "
                             "or 'auto' (the file's own rate)") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{str(value)[:40]} is not a frame rate: give a number > 0, 'max' or 'auto'")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{value:g} frames/s: give a number > 0, or 'max' for unpaced")
    return float(value)


def frame_rate(setting: float | str, src, loop: bool) -> tuple[float | None, str]:
    """The pace for an opened source under `setting`: (frames/s, or None for unpaced; why, for the log)."""
    if getattr(src, "live", False):
        return None, "unpaced: a camera or stream delivers at its own rate"
    if setting == MAX:
        return None, "unpaced (fps: max)"
    if setting != AUTO:
        return float(setting), "source.fps"
    recorded = getattr(src, "recorded_fps", None)
    if recorded is not None:
        low, high = VIDEO_FPS_RANGE
        if low <= recorded <= high:
            return recorded, "the video's own frame rate"
        return VIDEO_FALLBACK_FPS, f"the video's header gives no usable frame rate ({recorded:g}), so {VIDEO_FALLBACK_FPS:g}"
    if getattr(src, "stills", False):
        if loop:
            return STILLS_FPS, "a looped folder's default"
        return None, "unpaced: a folder played once is a batch"
    return None, "unpaced"


def describe(fps: float | None, why: str) -> str:
    """One phrase for the log and `--check`: 'at 15 frames/s (the video's own frame rate)'."""
    return f"at {fps:g} frames/s ({why})" if fps else why
