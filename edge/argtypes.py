"""Argument types shared by the subcommands, so a bad value is refused while parsing (exit 2),
before any work is done, with argparse's one line naming the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.manifest import MAX_RELEASE
from edge.sources.pace import parse_fps


def positive_int(text: str) -> int:
    """A count such as --limit or --max-frames: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def frame_rate_arg(text: str) -> float | str:
    """--fps: a frame rate > 0, `max` (unpaced) or `auto` (edge/sources/pace.py)."""
    try:
        return parse_fps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def release_number(text: str) -> int:
    """--release: a whole number a box accepts (1 to edge.manifest.MAX_RELEASE), so a huge one never signs."""

    text = text.strip()
    if not (text.isascii() and text.lstrip("+-").isdigit()) or len(text) > 12:
        shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} characters)"
        raise argparse.ArgumentTypeError(f"{shown!r} is not a release from 1 to {MAX_RELEASE}")
    value = int(text)
    if not 1 <= value <= MAX_RELEASE:
        raise argparse.ArgumentTypeError(f"{value} is not a release from 1 to {MAX_RELEASE}")
    return value


def output_file(text: str) -> Path:
    """A file to write at the end of a run: its folder must exist now, not after an hour of work."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    return path
