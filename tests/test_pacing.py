"""Pacing of file and folder sources (`--fps N|max`, `source.fps`, edge/sources/pace.py).

A replayed video plays at its own frame rate by default (a looped one ran at 2,000 frames/s
before), `max` is unpaced, a looped folder plays at 2 images/s, a folder played once and a
camera are never held back, and a bad value is one line and exit 2. Rates are checked with
generous lower bounds (a paced run cannot be faster than its frame rate allows), never
tight timings.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import SourceConfig, validate
from edge.errors import BadInput
from edge.sources import END, Source, open_watchdog
from edge.sources.pace import STILLS_FPS, VIDEO_FALLBACK_FPS, frame_rate, parse_fps
from tests.hostile import assert_refused, bundle, leukedge  # noqa: F401  (bundle: a fixture)


def write_avi(path: Path, frames: int = 30, fps: float = 15.0) -> Path:
    """A small MJPG video whose header says `fps`, every frame different."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        w.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    w.release()
    return path


def read_all(wd, limit: int = 1000) -> tuple[int, float]:
    """(frames read, seconds taken) until END or `limit` frames."""
    t0, n = time.monotonic(), 0
    while n < limit:
        f = wd.read()
        if f is END:
            break
        n += f is not None
    wd.close()
    return n, time.monotonic() - t0


def test_a_video_plays_at_its_own_frame_rate_by_default(tmp_path):
    video = write_avi(tmp_path / "v.avi", frames=30, fps=15.0)
    wd = open_watchdog(SourceConfig(uri=str(video)))
    assert wd.pace == "at 15 frames/s (the video's own frame rate)"
    n, took = read_all(wd)
    assert n == 30 and took >= 1.5, f"{n} frames in {took:.2f} s: faster than the video's 15 frames/s"


def test_max_is_unpaced_and_a_number_sets_the_pace(tmp_path):
    video = write_avi(tmp_path / "v.avi", frames=30, fps=15.0)
    n, fast = read_all(open_watchdog(SourceConfig(uri=str(video), fps="max")))
    assert n == 30 and fast < 1.0, f"unpaced: 30 small frames took {fast:.2f} s (paced would be >= 1.9 s)"
    wd = open_watchdog(SourceConfig(uri=str(video), fps=60))
    assert wd.pace == "at 60 frames/s (source.fps)"
    n, took = read_all(wd)
    assert n == 30 and took >= 0.4


def test_a_looped_video_keeps_its_pace_across_replays(tmp_path):
    video = write_avi(tmp_path / "v.avi", frames=10, fps=20.0)
    n, took = read_all(open_watchdog(SourceConfig(uri=str(video), loop=True)), limit=40)
    assert n == 40 and took >= 1.5, f"40 frames of a looped 20 fps video in {took:.2f} s"


def test_folders_paced_only_when_looped(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((32, 32, 3), i * 40, np.uint8))
    once = open_watchdog(SourceConfig(uri=str(tmp_path)))
    assert once.pace == "unpaced: a folder played once is a batch"
    assert read_all(once)[0] == 3
    looped = open_watchdog(SourceConfig(uri=str(tmp_path), loop=True))
    assert looped.pace == f"at {STILLS_FPS:g} frames/s (a looped folder's default)"
    n, took = read_all(looped, limit=4)
    assert n == 4 and took >= 3 / STILLS_FPS * 0.9


class _Camera(Source):
    live = True


class _Headerless(Source):
    recorded_fps = 0.0  # a video whose header gives no frame rate


@pytest.mark.parametrize("setting, source, loop, expected", [
    (5.0, _Camera(), False, None),  # a camera is never paced, whatever the setting
    ("auto", _Camera(), True, None),
    ("auto", _Headerless(), False, VIDEO_FALLBACK_FPS),
    ("max", _Headerless(), True, None),
    ("auto", Source(), True, None),  # a finite source with no rate of its own
])
def test_frame_rate_rules(setting, source, loop, expected):
    assert frame_rate(setting, source, loop)[0] == expected


def test_config_values():
    def fps(value):
        return validate({"bundle": "b", "source": {"fps": value}}).source.fps

    assert [fps(v) for v in (None, "auto", "MAX", 12, "7.5")] == ["auto", "auto", "max", 12.0, 7.5]
    for bad in (0, -1, "abc", float("nan"), float("inf"), True, [3]):
        with pytest.raises(BadInput, match=r"^config: field source\.fps: "):
            fps(bad)
    with pytest.raises(ValueError):
        parse_fps("")


@pytest.mark.parametrize("value, needle", [("0", "0 frames/s"), ("-1", "-1 frames/s"), ("abc", "'abc' is not a frame rate")])
def test_bad_fps_flag_is_one_line_exit_2(tmp_path, value, needle):
    proc = leukedge("agent", "--bundle", tmp_path, "--source", tmp_path, f"--fps={value}", timeout=60)
    assert_refused(proc, "--fps", needle)


def test_help_documents_the_flag():
    out = leukedge("agent", "--help", timeout=60).stdout
    assert "--fps N|max" in out and "unpaced" in out and "own frame rate" in out


def result_times(log: Path) -> list[float]:
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() for r in records
            if r["type"] == "result"]


def run_looped(tmp_path: Path, bundle: Path, video: Path, *extra: str):
    work = tmp_path / "_".join(extra or ("auto",))
    work.mkdir()
    proc = leukedge("agent", "--bundle", bundle, "--source", video, "--loop", "--gate", "continuous",
                    "--mqtt", "off", "--ui", "off", "--backend", "litert", "--outbox", work / "o.sqlite",
                    "--result-log", work / "r.jsonl", "--max-frames", "30", *extra, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    times = result_times(work / "r.jsonl")
    return proc, len(times), times[-1] - times[0]


def test_agent_on_a_looped_video_plays_at_its_rate_and_max_does_not(tmp_path, bundle):
    """The issue's case end to end: `agent --source video --loop` at the video's 15 frames/s
    (every frame a field: 30 results span >= 29/15 s), and `--fps max` far faster."""
    video = write_avi(tmp_path / "v.avi", frames=12, fps=15.0)
    proc, n, span = run_looped(tmp_path, bundle, video)
    assert "plays at 15 frames/s (the video's own frame rate)" in proc.stderr
    assert n == 30 and span >= 1.5, f"{n} results over {span:.2f} s"
    proc, n, fast = run_looped(tmp_path, bundle, video, "--fps", "max")
    assert "plays unpaced (fps: max)" in proc.stderr
    assert n == 30 and fast < span / 2, f"unpaced {fast:.2f} s vs paced {span:.2f} s"
