"""Hypothesis throws random frames and files at the agent's whole per-frame path.

Raw frames of any size, depth and channel count (what a misconfigured camera could send)
and files of random bytes, damaged encodings and headers that lie about their size (what
a folder could hold) go through a real `Agent.run()`: source, frame checks, gate,
preprocessing and a real LiteRT model. Every frame must end as a field, a gate rejection
or a bad frame with a known reason; the run must end normally.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.agent import Agent
from edge.config import load_config
from edge.errors import BAD_FRAME_REASONS
from edge.sources import END, Frame
from tests.agent_proc import png_claiming

_settings = settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from leukedge.bundle_factory import make_small_bundle

    return make_small_bundle(tmp_path_factory.mktemp("bundle"), formats=("tflite-int8",))


class Replay:
    """A camera-like source handing out frames made on demand, then END (the shape of a Watchdog)."""

    def __init__(self, makers):
        self.makers = list(makers)

    def read(self):
        return self.makers.pop(0)() if self.makers else END

    def stats(self) -> dict:
        return {"state": "open"}

    def close(self):
        pass


def run(tmp_path: Path, bundle: Path, source, gate: str) -> dict:
    """Run the agent offline to the end of `source`; the final `stats` payload."""
    work = Path(tmp_path)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("o.sqlite*"):
        stale.unlink()
    cfg = load_config(None, {"bundle": str(bundle), "device_id": "fuzz", "backend": {"name": "litert"},
                             "source": {"uri": str(source) if isinstance(source, Path) else "cv:0",
                                        "max_pixels": 1_000_000},
                             "gate": {"mode": gate}, "mqtt": {"url": "off"}, "outbox": {"path": str(work / "o.sqlite")},
                             "result_log": {"path": None}, "drain_timeout_s": 0})
    agent = Agent(cfg, source=None if isinstance(source, Path) else source)
    final = {}
    publish = agent.publish_stats

    def keep():
        final.update(publish())
        return final

    agent.publish_stats = keep
    assert agent.run() == 0
    return final


def assert_accounted(stats: dict, frames: int) -> None:
    f = stats["frames"]
    assert f["total"] == frames
    reasons = {k.removeprefix("bad_") for k in f if k.startswith("bad_")}
    assert reasons <= set(BAD_FRAME_REASONS)
    assert stats["fields"] + f["bad"] + sum(stats["gate_rejected"].values()) == frames, stats


# --------------------------------------------------------------------------- raw frames

_DTYPES = (np.uint8, np.uint8, np.uint8, np.uint16, np.int8, np.float32, np.bool_)
raw_frames = st.lists(st.tuples(
    st.integers(0, 400) | st.sampled_from([16, 17, 20, 24]),  # height: small ones for long thin frames
    st.integers(0, 5000),  # width
    st.sampled_from([None, 1, 2, 3, 4, 5]),  # channels (None: a 2-D array)
    st.sampled_from(_DTYPES),
    st.integers(0, 2**32 - 1),  # pixel seed
    st.booleans(),  # still capture
), min_size=1, max_size=6)


@_settings
@given(frames=raw_frames, gate=st.sampled_from(["still", "continuous"]))
def test_fuzz_raw_frames_through_the_agent(tmp_path, bundle, frames, gate):
    def maker(i, h, w, c, dtype, seed, still):
        def make():
            shape = (h, w) if c is None else (h, w, c)
            rng = np.random.default_rng(seed)
            image = (rng.integers(0, 256, shape, dtype=np.uint8) if dtype == np.uint8
                     else rng.random(shape).astype(dtype) if dtype == np.float32
                     else rng.integers(0, 2, shape).astype(dtype))
            return Frame(image, i, f"fuzz#{i}", 0.0, still)
        return make

    makers = [maker(i, *spec) for i, spec in enumerate(frames)]
    assert_accounted(run(tmp_path / "raw", bundle, Replay(makers), gate), len(makers))


# --------------------------------------------------------------------------- files


@st.composite
def files(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["bytes", "encoded", "damaged", "liar"]))
    if kind == "bytes":
        return ".jpg", draw(st.binary(max_size=3000))
    if kind == "liar":
        return ".png", png_claiming(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
    ext = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".webp"]))
    h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    c = draw(st.sampled_from([None, 3, 4]))
    deep = ext in (".png", ".tif") and draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    img = rng.integers(0, 65535 if deep else 255, (h, w) if c is None else (h, w, c)).astype(
        np.uint16 if deep else np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    if kind == "damaged":
        cut = draw(st.integers(0, len(data)))
        flips = draw(st.lists(st.tuples(st.integers(0, max(0, cut - 1)), st.integers(1, 255)), max_size=8))
        damaged = bytearray(data[:cut])
        for at, x in flips:
            if at < len(damaged):
                damaged[at] ^= x
        data = bytes(damaged)
    return ext, data


@_settings
@given(content=st.lists(files(), min_size=1, max_size=6), gate=st.sampled_from(["still", "continuous"]))
def test_fuzz_files_through_the_agent(tmp_path, bundle, content, gate):
    folder = tmp_path / "files"
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    folder.mkdir(exist_ok=True)
    for i, (ext, data) in enumerate(content):
        (folder / f"f{i:02d}{ext}").write_bytes(data)
    assert_accounted(run(tmp_path / "files-run", bundle, folder, gate), len(content))
