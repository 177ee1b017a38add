"""Stain normalisation (edge/stain.py): fitting, round trips, degenerate frames, the preprocess hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge import stain
from edge.errors import BadInput
from edge.manifest import InputSpec
from edge.pixels import preprocess
from edge.stain import StainNorm
from trainer.synth.fields import render_field
from trainer.synth.style import AZURE_OD, EOSIN_OD

METHODS = ("reinhard", "macenko")
# One reference staining; tests change one property of it at a time.
REFERENCE = dict(hue_deg=0.0, brightness=0.95, eosin_od=EOSIN_OD, azure_od=AZURE_OD, tint=np.zeros(3, np.float32))


def field(seed: int = 3, label: str = "Pro", size: int = 96, **style) -> np.ndarray:
    return render_field(np.random.default_rng(seed), label, size, **{**REFERENCE, **style})


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    labels = ("Benign", "Early", "Pre", "Pro")
    return np.stack([field(seed, labels[seed % 4], size=64) for seed in range(12)])


@pytest.fixture(scope="module")
def fitted(batch) -> dict[str, StainNorm]:
    return {method: stain.fit_stain_norm(method, batch) for method in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_fit_gives_a_jsonable_target_that_validates_in_the_input_spec(batch, method):
    norm = stain.fit_stain_norm(method, batch)
    assert norm.method == method
    spec = InputSpec.model_validate(json.loads(json.dumps({"height": 64, "width": 64, "stain_norm": norm.model_dump()})))
    assert spec.stain_norm == norm
    values = np.concatenate([np.ravel(v) for v in norm.target.values()])
    assert values.size >= 6 and np.all(np.isfinite(values))


def test_none_leaves_the_image_alone(batch):
    norm = stain.fit_stain_norm("none", batch)
    assert norm == StainNorm()
    img = batch[0]
    assert stain.normalize(img, norm) is img


@pytest.mark.parametrize("method, tolerance", [("reinhard", 1.5), ("macenko", 6.0)])
def test_an_image_already_at_the_target_stays_close(method, tolerance):
    x = field()
    out = stain.normalize(x, stain.fit_stain_norm(method, x[None]))
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert diff(out, x) < tolerance


def test_reinhard_brings_a_hue_and_exposure_shifted_field_back():
    x = field()
    norm = stain.fit_stain_norm("reinhard", x[None])
    shifted = field(hue_deg=30.0, brightness=0.8)
    before, after = diff(shifted, x), diff(stain.normalize(shifted, norm), x)
    assert before > 10
    assert after < 0.35 * before
    # and the LAB channel means land on the target
    mean_after = stain._lab_stats(stain.normalize(shifted, norm))[0]
    assert np.abs(mean_after - norm.target["mean"]).max() < 2.0


def beer_lambert_field(eosin: float = 1.0, azure: float = 1.0) -> np.ndarray:
    """A field built exactly as Macenko's model assumes: two stains, optical densities that add."""
    import cv2

    rng = np.random.default_rng(7)
    c_eosin, c_azure = np.zeros((96, 96), np.float32), np.zeros((96, 96), np.float32)
    for _ in range(14):  # red cells
        cv2.circle(c_eosin, tuple(int(v) for v in rng.integers(0, 96, 2)), int(rng.integers(6, 10)), 0.6, -1)
    for _ in range(2):  # leukocyte nuclei
        cv2.circle(c_azure, tuple(int(v) for v in rng.integers(15, 81, 2)), int(rng.integers(9, 13)), 1.2, -1)
    c_eosin, c_azure = cv2.GaussianBlur(c_eosin, (0, 0), 1.5), cv2.GaussianBlur(c_azure, (0, 0), 1.5)
    od = eosin * c_eosin[..., None] * EOSIN_OD + azure * c_azure[..., None] * AZURE_OD
    noise = rng.normal(0, 1.0, (96, 96, 3))
    return np.clip(240 * np.exp(-od) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("change", [dict(eosin=1.4, azure=0.7), dict(eosin=0.7, azure=1.4), dict(eosin=1.3)])
def test_macenko_undoes_a_change_of_stain(change):
    x = beer_lambert_field()
    norm = stain.fit_stain_norm("macenko", x[None])
    shifted = beer_lambert_field(**change)
    before, after = diff(shifted, x), diff(stain.normalize(shifted, norm), x)
    assert before > 3
    assert after < 0.7 * before, (before, after)


def test_the_batch_target_is_the_average_of_the_images(batch):
    """Reinhard's target is the mean of the per-image LAB statistics of the training images."""
    norm = stain.fit_stain_norm("reinhard", batch)
    stats = np.array([stain._lab_stats(img) for img in batch])
    np.testing.assert_allclose(norm.target["mean"], stats[:, 0].mean(0), atol=1e-6)
    np.testing.assert_allclose(norm.target["std"], stats[:, 1].mean(0), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [0, 128, 250, 255])
def test_flat_and_near_white_frames_do_not_break(batch, method, value):
    norm = stain.fit_stain_norm(method, batch)
    flat = np.full((64, 64, 3), value, np.uint8)
    noisy_white = np.clip(250 + np.random.default_rng(0).normal(0, 2, (64, 64, 3)), 0, 255).astype(np.uint8)
    for img in (flat, noisy_white):
        out = stain.normalize(img, norm)
        assert out.dtype == np.uint8 and out.shape == img.shape


def test_macenko_leaves_background_only_frames_unchanged(batch):
    norm = stain.fit_stain_norm("macenko", batch)
    white = np.full((64, 64, 3), 245, np.uint8)
    assert np.array_equal(stain.normalize(white, norm), white)


@settings(max_examples=25, deadline=None)
@given(img=arrays(np.uint8, (24, 32, 3)), method=st.sampled_from(METHODS))
def test_any_uint8_image_gives_a_uint8_image(fitted, img, method):
    out = stain.normalize(img, fitted[method])
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_non_contiguous_views_are_accepted(batch):
    norm = stain.fit_stain_norm("reinhard", batch)
    view = batch[0][:, 8:40]  # a crop: not C-contiguous
    np.testing.assert_array_equal(stain.normalize(view, norm), stain.normalize(np.ascontiguousarray(view), norm))


def test_preprocess_with_a_stain_spec_runs_the_normalisation(batch, monkeypatch):
    norm = stain.fit_stain_norm("reinhard", batch)
    spec = InputSpec(height=48, width=48, stain_norm=norm)
    frame = field(size=80)
    plain = preprocess(frame, 48)
    calls = []
    real = stain.normalize

    def spy(rgb, n):
        calls.append(n)
        return real(rgb, n)

    monkeypatch.setattr(stain, "normalize", spy)
    out = preprocess(frame, spec)
    assert calls == [norm]
    np.testing.assert_array_equal(out, real(plain, norm))
    assert not np.array_equal(out, plain)


def test_bad_input_is_refused_with_a_clear_message(batch):
    with pytest.raises(BadInput, match="expected one of"):
        stain.fit_stain_norm("vahadane", batch)
    with pytest.raises(BadInput, match="uint8"):
        stain.fit_stain_norm("reinhard", batch.astype(np.float32))
    with pytest.raises(BadInput, match="HxWx3 uint8"):
        stain.normalize(batch[0, :, :, 0], stain.fit_stain_norm("reinhard", batch))
    with pytest.raises(BadInput, match="target.std"):
        stain.normalize(batch[0], StainNorm(method="reinhard", target={"mean": [1.0, 2.0, 3.0]}))
    with pytest.raises(BadInput, match="stain_matrix"):
        stain.normalize(batch[0], StainNorm(method="macenko", target={"max_conc": [1.0, 1.0]}))
    with pytest.raises(BadInput, match="stained pixels"):
        stain.fit_stain_norm("macenko", np.full((2, 32, 32, 3), 250, np.uint8))
