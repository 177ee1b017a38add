"""Camera-size frames: preprocess's whole-factor area shrink keeps picture and field of view; reduced JPEG decoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.errors import BadFrame
from edge.manifest import InputSpec
from edge.pixels import decode_image, jpeg_reduction_factor, preprocess, reduce_like_jpeg
from trainer.synth.fields import render_field


def _direct(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    """The one-step resize preprocess used before: centre square, one cv2.INTER_AREA resize."""
    fh, fw = frame.shape[:2]
    side = min(fh, fw)
    top, left = (fh - side) // 2, (fw - side) // 2
    return cv2.resize(frame[top:top + side, left:left + side], (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("w,h", [(1280, 960), (1920, 1080), (640, 480), (2592, 1944)])
def test_two_step_resize_matches_the_direct_resize(w, h):
    field = cv2.resize(render_field(np.random.default_rng(w), "Pre", max(w, h)), (w, h))
    out = preprocess(field, 224)
    diff = np.abs(out.astype(int) - _direct(field, 224, 224).astype(int))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, (diff.mean(), diff.max())


def test_whole_factor_step_is_a_block_mean():
    """A square that is an exact multiple of the model size is averaged in whole blocks, nothing else
    (two 2x halvings: each rounds to the nearest level, so within one level of the exact mean)."""
    frame = np.random.default_rng(0).integers(0, 256, (896, 1000, 3), dtype=np.uint8)
    square = frame[:, 52:948].astype(float)
    blocks = square.reshape(224, 4, 224, 4, 3).mean(axis=(1, 3))
    err = np.abs(preprocess(frame, 224) - blocks)
    assert err.max() <= 1.0 + 1e-9 and err.mean() < 0.35


def test_field_of_view_is_the_whole_centre_square():
    """A bright ring on the edge of the centre square survives: the shrink crops at most factor - 1 pixels."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    left = (1920 - 1080) // 2
    square = frame[:, left:left + 1080]
    square[:6], square[-6:], square[:, :6], square[:, -6:] = 255, 255, 255, 255
    out = preprocess(frame, 224)
    for edge in (out[0], out[-1], out[:, 0], out[:, -1]):
        assert edge.min() > 100
    assert out[10:-10, 10:-10].max() == 0


def test_non_square_model_input():
    field = render_field(np.random.default_rng(1), "Benign", 960)
    frame = cv2.resize(field, (1280, 960))
    out = preprocess(frame, InputSpec(height=96, width=128))
    assert out.shape == (96, 128, 3)
    # 137x137 -> 128x96 squeezes one axis more than the other: fine detail differs a little more than at 224
    assert np.abs(out.astype(int) - _direct(frame, 96, 128).astype(int)).mean() < 2.0


def _encoded(img: np.ndarray, ext: str) -> bytes:
    return cv2.imencode(ext, img)[1].tobytes()


def test_reduced_jpeg_decoding_keeps_the_short_side():
    field = cv2.resize(render_field(np.random.default_rng(2), "Early", 480), (1920, 1080))
    jpeg = _encoded(field[..., ::-1], ".jpg")
    assert [jpeg_reduction_factor(jpeg, m) for m in (0, 100, 135, 136, 270, 271, 540, 541)] == [1, 8, 8, 4, 4, 2, 2, 1]
    assert decode_image(jpeg, "f", min_side=448).shape == (540, 960, 3)
    full = decode_image(jpeg, "f")
    assert full.shape == (1080, 1920, 3)
    # the model input from a reduced decode is close to the one from a full decode
    reduced = decode_image(jpeg, "f", min_side=448)
    diff = np.abs(preprocess(reduced, 224).astype(int) - preprocess(full, 224).astype(int))
    assert diff.mean() < 2.0, diff.mean()
    assert np.abs(reduced[..., 0].astype(int).mean() - full[..., 0].mean()) < 1  # RGB, not BGR


def test_reduced_decoding_leaves_other_images_alone():
    grey = np.random.default_rng(0).integers(0, 256, (960, 1280), dtype=np.uint8)
    assert jpeg_reduction_factor(_encoded(grey, ".jpg"), 100) == 1
    with pytest.raises(BadFrame, match="grayscale"):  # still refused, not turned into three grey channels
        decode_image(_encoded(grey, ".jpg"), "g", min_side=100)
    colour = np.dstack([grey] * 3)
    assert jpeg_reduction_factor(_encoded(colour, ".png"), 100) == 1
    assert decode_image(_encoded(colour, ".png"), "p", min_side=100).shape == (960, 1280, 3)
    assert jpeg_reduction_factor(b"\xff\xd8 not a jpeg", 100) == 1
    with pytest.raises(BadFrame, match="not a decodable"):
        decode_image(b"\xff\xd8 not a jpeg", "t", min_side=100)


@pytest.mark.parametrize("size", [(1280, 960), (1920, 1080), (640, 480), (1283, 967)])
def test_reduced_camera_frames_give_the_same_model_input(size):
    """A raw frame is box-averaged by 2, 4 or 8 before the gate, as a large JPEG is decoded, its
    blocks lined up with preprocess's centre square: the model input is the full frame's."""
    field = cv2.resize(render_field(np.random.default_rng(3), "Pro", 480), size)
    small = reduce_like_jpeg(field, 224)
    k = {960: 4, 1080: 4, 480: 2, 967: 4}[size[1]]
    assert abs(small.shape[0] - size[1] / k) < 1 and abs(small.shape[1] - size[0] / k) < 1
    np.testing.assert_array_equal(preprocess(small, 224), preprocess(field, 224))
    under_twice = field[:400, :400]
    assert reduce_like_jpeg(under_twice, 224) is under_twice  # 400 // 2 < 224: left as it is
