"""Augmentation (dihedral symmetries + mild colour jitter) and SMOTE balancing."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import BadInput
from trainer.augment import augment_batch, smote_balance


def dihedral(img: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of a square image."""
    return [np.rot90(f, k) for f in (img, img[:, ::-1]) for k in range(4)]


def asymmetric_batch(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth images with a distinct corner, so every symmetry gives a different image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    batch = []
    for _ in range(n):
        base = rng.uniform(60, 140, 3)
        img = base + 50 * np.stack([xx, yy * yy, xx * yy], -1)
        img[: size // 4, : size // 3] += 40
        batch.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(batch)


def colour_fit(out: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine colour map out ~ M @ [r, g, b, 1]: (M, max residual in grey levels)."""
    a = np.c_[src.reshape(-1, 3).astype(float), np.ones(src.shape[0] * src.shape[1])]
    b = out.reshape(-1, 3).astype(float)
    m, *_ = np.linalg.lstsq(a, b, rcond=None)
    return m.T, float(np.abs(a @ m - b).max())


def test_augment_keeps_shape_dtype_and_input():
    x = asymmetric_batch(6)
    before = x.copy()
    out = augment_batch(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(x, before)


def test_without_jitter_every_image_is_an_exact_symmetry_and_all_eight_occur():
    x = asymmetric_batch(64)
    out = augment_batch(x, np.random.default_rng(1), brightness=0, contrast=0, hue_degrees=0)
    seen = set()
    for o, img in zip(out, x):
        matches = [k for k, t in enumerate(dihedral(img)) if np.array_equal(o, t)]
        assert matches, "output is not a symmetry of its input"
        seen.add(matches[0])
    assert seen == set(range(8))


def test_jitter_is_a_mild_colour_map_on_top_of_one_symmetry():
    x = asymmetric_batch(32, seed=2)
    out = augment_batch(x, np.random.default_rng(2))
    changed = 0
    for o, img in zip(out, x):
        fits = [colour_fit(o, t) for t in dihedral(img)]
        residuals = sorted(r for _, r in fits)
        assert residuals[0] <= 2.0 < residuals[1], "output is not one symmetry of its input plus a colour map"
        m, _ = min(fits, key=lambda f: f[1])
        assert np.abs(m[:, :3] - np.eye(3)).max() < 0.25, "colour jitter is not mild"
        changed += not np.allclose(m[:, :3], np.eye(3), atol=0.01)
    assert changed >= 28, "jitter should alter almost every image"


def test_jitter_keeps_grey_grey_and_brightness_within_ten_percent():
    grey = np.full((16, 20, 20, 3), 128, np.uint8)
    out = augment_batch(grey, np.random.default_rng(3)).astype(int)
    assert (np.ptp(out, axis=-1) <= 1).all(), "hue rotation must keep grey pixels grey"
    assert out.min() >= int(128 * 0.9) - 1 and out.max() <= int(np.ceil(128 * 1.1)) + 1


def test_augment_is_deterministic_for_a_seed_and_handles_non_square():
    x = asymmetric_batch(8)
    a = augment_batch(x, np.random.default_rng(7))
    b = augment_batch(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    wide = np.ascontiguousarray(x[:, :24, :, :])
    assert augment_batch(wide, np.random.default_rng(0)).shape == wide.shape
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(x.astype(np.float32), np.random.default_rng(0))


# --------------------------------------------------------------------------- SMOTE


def imbalanced(seed: int = 0):
    rng = np.random.default_rng(seed)
    counts = [9, 20, 4, 13]
    y = np.repeat(np.arange(4), counts)
    x = (rng.integers(0, 40, (len(y), 12, 12, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    return x, y


def test_smote_balances_every_class_to_the_majority_and_keeps_originals_first():
    x, y = imbalanced()
    xs, ys = smote_balance(x, y, seed=0)
    assert xs.dtype == np.uint8 and xs.shape[1:] == x.shape[1:]
    assert np.bincount(ys).tolist() == [20, 20, 20, 20]
    np.testing.assert_array_equal(xs[: len(x)], x)
    np.testing.assert_array_equal(ys[: len(y)], y)
    assert (np.diff(ys[len(y) :]) >= 0).all(), "synthetic images come grouped by class"


def test_smote_samples_lie_between_two_same_class_images():
    x, y = imbalanced()
    xs, ys = smote_balance(x, y, seed=0)
    for img, label in zip(xs[len(x) :], ys[len(y) :]):
        own = x[y == label].reshape(int((y == label).sum()), -1).astype(float)
        flat = img.reshape(-1).astype(float)
        lo, hi = own.min(0), own.max(0)
        assert ((flat >= lo - 1) & (flat <= hi + 1)).all(), "outside the hull of its own class"
        # a straight-line blend: some pair (a, b) of the class with flat ~ a + t (b - a)
        best = np.inf
        for a in own:
            d = own - a
            t = np.clip(((flat - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-9), 0, 1)
            best = min(best, np.abs(a + t[:, None] * d - flat).max(1).min())
        assert best <= 1.0, "not a blend of two same-class images"


def test_smote_is_deterministic_and_seeded():
    x, y = imbalanced()
    a, _ = smote_balance(x, y, seed=1)
    b, _ = smote_balance(x, y, seed=1)
    c, _ = smote_balance(x, y, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_smote_leaves_balanced_data_alone_and_refuses_singletons():
    x, y = imbalanced()
    keep = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(4)])
    xs, ys = smote_balance(x[keep], y[keep])
    np.testing.assert_array_equal(xs, x[keep])
    np.testing.assert_array_equal(ys, y[keep])
    lonely = np.concatenate([np.flatnonzero(y == 0)[:1], np.flatnonzero(y == 1)])
    with pytest.raises(BadInput, match="only 1 training image"):
        smote_balance(x[lonely], y[lonely])
