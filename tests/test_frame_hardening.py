"""One frame never stops the agent: the frame checks, the gate, the sources and the backend
thread default on their own (issue cases: extreme aspect ratios, decompression bombs,
reasons set where raised, still captures, videos broken part-way, threads from affinity).
The command-line cases are in tests/test_hostile.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.config import GateConfig
from edge.errors import BAD_FRAME_REASONS, BadFrame
from edge.gate import Gate
from edge.pixels import decode_image
from edge.sources import END, Watchdog, make_source
from tests.agent_proc import ROOT, blank_png, png_claiming


def sharp_field(seed: int, size: int = 128) -> np.ndarray:
    """A picture with cell-like dark discs on a light background: sharp, distinct per seed."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 225, np.uint8)
    for _ in range(12):
        x, y, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(4, 12)
        cv2.circle(img, (int(x), int(y)), int(r), tuple(int(c) for c in rng.integers(40, 160, 3)), -1)
    return img


# --------------------------------------------------------------------------- frame checks


@pytest.mark.parametrize("shape", [(20, 60000, 3), (60000, 20, 3), (16, 3000, 3), (16, 16, 3), (17, 100000, 3)])
@pytest.mark.parametrize("mode", ["still", "continuous"])
def test_gate_takes_extreme_aspect_ratios(shape, mode):
    """A 60000x20 frame used to shrink to 0 rows in the gate's analysis copy and crash the agent."""
    gate = Gate(GateConfig(mode=mode))
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert gate.check(frame).reason in ("field", "moving", "skipped")
    for still in (True, False):
        assert gate.check(frame, still=still).reason in ("field", "moving", "settling", "blank", "blurred",
                                                         "same_field", "skipped")


def test_pixel_cap_is_checked_from_the_header_before_decoding(monkeypatch):
    """A 16000x16000 PNG is 750 kB on disk and 768 MB decoded: refused before any decode."""
    big, large = blank_png(16000, 16000), blank_png(8000, 7000)
    assert len(big) < 1_000_000

    def no_decode(*_):
        raise AssertionError("decoded although the header is over the cap")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    with pytest.raises(BadFrame, match="over source.max_pixels") as err:
        decode_image(big, "big.png", max_pixels=50_000_000)
    assert err.value.reason == "too_large" and err.value.frame == "big.png"
    with pytest.raises(BadFrame, match="8000x7000 has 56.0 MP, over source.max_pixels") as err:
        decode_image(large, "large.png", max_pixels=50_000_000)
    assert err.value.reason == "too_large"
    # a header that lies about its size is refused the same way, whatever the pixel data
    for w, h in ((100_000, 100_000), (2**31 - 1, 2**31 - 1)):
        with pytest.raises(BadFrame) as err:
            decode_image(png_claiming(w, h), "liar.png", max_pixels=50_000_000)
        assert err.value.reason == "too_large"


def test_pixel_cap_applies_to_decoded_frames_too():
    """A format Pillow cannot read the header of is decoded, then checked (a camera frame too)."""
    from edge.pixels import as_rgb_uint8

    frame = np.zeros((100, 200, 3), np.uint8)
    assert as_rgb_uint8(frame, max_pixels=20_000).shape == (100, 200, 3)
    with pytest.raises(BadFrame) as err:
        as_rgb_uint8(frame, max_pixels=19_999)
    assert err.value.reason == "too_large"


@pytest.mark.parametrize("name", ["grayscale_dtype.jpg", "empty too small shape.png", "16-bit_rgba.jpg"])
def test_bad_frame_reason_is_set_where_raised_not_guessed_from_text(tmp_path, name):
    """The reason used to be picked by matching words of the message, file name included."""
    (tmp_path / name).write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    src = make_source(str(tmp_path)).open()
    with pytest.raises(BadFrame) as err:
        src.read()
    assert (err.value.reason, err.value.frame) == ("corrupt", name)


def test_every_bad_frame_has_a_known_reason():
    with pytest.raises(ValueError, match="reason"):
        BadFrame("x", "something else")
    cases = {"empty": np.zeros((0, 5, 3), np.uint8), "bit_depth": np.zeros((20, 20, 3), np.uint16),
             "grayscale": np.zeros((20, 20), np.uint8), "shape": np.zeros((20, 20, 2), np.uint8),
             "too_small": np.zeros((8, 800, 3), np.uint8)}
    from edge.pixels import as_rgb_uint8

    for reason, frame in cases.items():
        with pytest.raises(BadFrame) as err:
            as_rgb_uint8(frame)
        assert err.value.reason == reason and reason in BAD_FRAME_REASONS
    with pytest.raises(BadFrame) as err:
        decode_image(b"", "e.png")
    assert err.value.reason == "empty"


# --------------------------------------------------------------------------- still captures


def test_each_image_of_a_folder_is_a_still_capture(tmp_path):
    """Distinct images never look 'still' to the still gate, so a folder used to give 0 fields.
    Focus and blank checks still apply to each image."""
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), sharp_field(i))
    cv2.imwrite(str(tmp_path / "x_blurred.png"), cv2.GaussianBlur(sharp_field(9), (0, 0), 6))
    cv2.imwrite(str(tmp_path / "y_blank.png"), np.full((128, 128, 3), 200, np.uint8))
    wd, gate, verdicts = Watchdog(lambda: make_source(str(tmp_path))).open(), Gate(GateConfig()), {}
    while (frame := wd.read()) is not END:
        assert frame.still
        verdicts[frame.name] = gate.check(frame.image, still=frame.still).reason
    assert verdicts == {"f0.png": "field", "f1.png": "field", "f2.png": "field", "f3.png": "field",
                        "x_blurred.png": "blurred", "y_blank.png": "blank"}
    assert "1 blurred" in gate.explain() and "gate.focus_threshold" in gate.explain()


def test_one_image_file_is_a_source(tmp_path):
    cv2.imwrite(str(tmp_path / "one.jpg"), sharp_field(1))
    wd = Watchdog(lambda: make_source(str(tmp_path / "one.jpg"))).open()
    frame = wd.read()
    assert frame.name == "one.jpg" and frame.still and Gate(GateConfig()).check(frame.image, frame.still).accept
    assert wd.read() is END


def test_gate_explains_why_nothing_passed():
    gate = Gate(GateConfig())
    rng = np.random.default_rng(0)
    for _ in range(5):
        gate.check(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    line = gate.explain()
    assert line.startswith("5 moving") and "gate.motion_threshold" in line


# --------------------------------------------------------------------------- videos


def write_video(path, n: int = 200) -> bytes:
    rng = np.random.default_rng(0)
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (96, 96))
    for _ in range(n):
        w.write(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    w.release()
    return path.read_bytes()


def drain(wd) -> tuple[int, list[str]]:
    frames, bad = 0, []
    while True:
        try:
            frame = wd.read()
        except BadFrame as exc:
            bad.append(exc.reason)
            continue
        if frame is END:
            return frames, bad
        frames += frame is not None


def test_video_cut_part_way_is_a_source_error_not_a_clean_end(tmp_path):
    """A truncated video used to end as if complete: exit 0 after half its fields, no warning."""
    data = write_video(tmp_path / "v.avi")
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    wd = Watchdog(lambda: make_source(str(tmp_path / "cut.avi"))).open()
    frames, bad = drain(wd)
    assert 50 < frames < 150 and wd.broken and "of the 200" in wd.broken and wd.failures == 1
    assert set(bad) <= {"corrupt"}
    whole = Watchdog(lambda: make_source(str(tmp_path / "v.avi"))).open()
    assert drain(whole) == (200, []) and whole.broken is None and whole.failures == 0


def test_video_with_a_damaged_middle_skips_and_counts_the_damage(tmp_path):
    """FFmpeg resumes after a damaged stretch of an mp4: the frames lost are counted, the rest read."""
    data = bytearray(write_video(tmp_path / "v.mp4"))
    n = len(data)
    data[n // 2 : n // 2 + n // 16] = bytes(n // 16)
    (tmp_path / "hole.mp4").write_bytes(bytes(data))
    wd = Watchdog(lambda: make_source(str(tmp_path / "hole.mp4"))).open()
    frames, bad = drain(wd)
    assert bad and set(bad) == {"corrupt"} and frames + len(bad) == 200 and wd.broken is None


def test_looped_broken_video_is_counted_and_replayed(tmp_path):
    data = write_video(tmp_path / "v.avi", 60)
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 3])
    wd = Watchdog(lambda: make_source(str(tmp_path / "cut.avi")), loop=True).open()
    frames = 0
    for _ in range(400):
        try:
            frames += wd.read() is not None
        except BadFrame:
            pass
    assert wd.failures >= 2 and wd.eofs >= 2 and frames > 20 and wd.broken is None


# --------------------------------------------------------------------------- backend threads


def test_backend_threads_default_to_the_cores_the_agent_may_use(tmp_path):
    """LiteRT's own default is one thread; the agent now asks for the allowed cores (at most 4)."""
    from leukedge.bundle_factory import make_small_bundle

    bundle = make_small_bundle(tmp_path)
    code = ("import os, sys; from edge.backends import default_threads, open_backend\n"
            "os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(',')})\n"
            "b = open_backend(sys.argv[1], 'tflite-int8', 'litert')\n"
            "o = open_backend(sys.argv[1], 'tflite-int8', 'litert', threads=3)\n"
            "print(default_threads(), b.threads, o.threads)")
    cores = sorted(os.sched_getaffinity(0))
    for allowed in ([cores[0]], cores):
        out = subprocess.run([sys.executable, "-c", code, str(bundle / "model_int8.tflite"),
                              ",".join(map(str, allowed))], capture_output=True, text=True, cwd=ROOT, check=True)
        want = min(len(allowed), 4)
        assert out.stdout.split() == [str(want), str(want), "3"], out.stderr


# --------------------------------------------------------------------------- log limit


def test_limited_log_keeps_a_flood_readable(caplog):
    """10 lines in full, then one per interval that says how many were held back."""
    import logging

    from edge.loglimit import LimitedLog

    now = [0.0]
    limited = LimitedLog(logging.getLogger("t.limit"), burst=10, every_s=30, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t.limit"):
        for i in range(1000):
            now[0] = i * 0.1  # 100 s of a 10 Hz flood
            limited.warning("bad frame %d", i)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:10] == [f"bad frame {i}" for i in range(9)] + [lines[9]] and "one line per 30 s" in lines[9]
    assert len(lines) == 10 + 3 and lines[10] == "bad frame 309 (299 more since the last such line)"
