"""Training-split augmentation: exact symmetries of a smear field, mild colour jitter, SMOTE.

Nothing here is applied to validation or test data; the trainer calls these on the
training split only. numpy + OpenCV + imbalanced-learn, no TensorFlow (runs under JAX too).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.errors import BadInput

_ROTATE = {1: 2, 2: 1, 3: 0}  # rot90 k (counter-clockwise) -> cv2.ROTATE_* code

# `train --augment`: the colour jitter that goes with the eight symmetries (None: no augmentation at all).
# mild is the default; strong makes stain colour a weaker cue, so the model has to lean on shape.
STRENGTHS: dict[str, dict | None] = {
    "none": None,
    "mild": {"brightness": 0.10, "contrast": 0.10, "hue_degrees": 4.0},
    "strong": {"brightness": 0.25, "contrast": 0.25, "hue_degrees": 15.0},
}


def grey_axis_rotations(degrees) -> np.ndarray:
    """(B,) degrees -> (B, 3, 3) rotations of RGB space about the grey axis (1,1,1) (Rodrigues):
    a hue shift that keeps grey grey. Vectorised so the per-image loop holds the GIL briefly.
    The smear generator rotates its stain hue with the same matrices."""
    t = np.radians(np.asarray(degrees, np.float64))[:, None, None]
    u = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.cos(t) * np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * np.outer(u, u)


def symmetry(img: np.ndarray, k: int, flip: int) -> np.ndarray:
    """rot90 k times (counter-clockwise), then a horizontal flip if `flip`: one OpenCV pass where possible."""
    if not flip:
        return cv2.rotate(img, _ROTATE[k]) if k else img
    if k == 0:
        return cv2.flip(img, 1)
    if k == 2:
        return cv2.flip(img, 0)
    if k == 3:
        return cv2.transpose(img)
    return cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)


def augment_batch(
    x: np.ndarray,
    rng: np.random.Generator,
    brightness: float = STRENGTHS["mild"]["brightness"],
    contrast: float = STRENGTHS["mild"]["contrast"],
    hue_degrees: float = STRENGTHS["mild"]["hue_degrees"],
) -> np.ndarray:
    """Randomly transform each image of a uint8 (B, H, W, 3) batch; returns a new uint8 batch.

    Geometry: one of the 8 symmetries of the square, uniformly (rot90 k in 0..3, then a
    horizontal flip or not; vertical flips are included as flip + rot180). Non-square
    images get only k in {0, 2}. A smear field has no up or left, so these are exact.
    Colour: brightness x(1 +- 10 %), contrast x(1 +- 10 %) about the image's mean grey,
    hue rotated +- 4 degrees about the grey axis; all three fold into one 3x4 affine
    colour matrix per image, applied by cv2.transform with uint8 saturation.
    """
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"augment_batch wants uint8 (B, H, W, 3), got {x.dtype} {x.shape}")
    b, h, w, _ = x.shape
    out = np.empty_like(x)
    ks = rng.integers(0, 4, b) if h == w else 2 * rng.integers(0, 2, b)
    flips = rng.integers(0, 2, b)
    gains = 1 + rng.uniform(-brightness, brightness, b)
    contrasts = 1 + rng.uniform(-contrast, contrast, b)
    hues = rng.uniform(-hue_degrees, hue_degrees, b)
    matrices = np.empty((b, 3, 4), np.float32)
    matrices[:, :, :3] = (gains * contrasts)[:, None, None] * grey_axis_rotations(hues)
    offsets = (gains * (1 - contrasts)).astype(np.float32)
    for i in range(b):
        img = symmetry(x[i], int(ks[i]), int(flips[i]))
        matrices[i, :, 3] = offsets[i] * float(np.mean(cv2.mean(img)[:3]))  # geometry keeps the mean
        cv2.transform(img, matrices[i], dst=out[i])
    return out


def smote_balance(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Oversample every minority class with SMOTE up to the majority count (the paper's recipe).

    SMOTE interpolates in raw pixel space: each synthetic image is a straight-line blend
    a*img1 + (1-a)*img2 of an image and one of its k nearest same-class neighbours
    (k = min(5, smallest class - 1)). Returns uint8 x and y: the originals first,
    unchanged and in their order, then the synthetic images grouped by class.

    Vanilla SMOTE builds class c only from class-c images, so each class is resampled on
    its own (plus one placeholder row of another class, which imbalanced-learn needs to
    see two classes): the same algorithm as one call over everything, with a float32
    working copy of one class instead of the whole split.
    """
    from imblearn.over_sampling import SMOTE

    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"smote_balance wants uint8 (N, H, W, C) and N labels, got {x.dtype} {x.shape}, {len(y)}")
    y = np.asarray(y, np.int64)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() == counts.max():
        return x.copy(), y.copy()
    smallest = int(counts.min())
    if smallest < 2:
        lonely = int(classes[counts.argmin()])
        raise BadInput(f"SMOTE: class index {lonely} has only 1 training image (needs 2); add data or use --no-smote")
    k = min(5, smallest - 1)
    target = int(counts.max())
    new_x, new_y = [x], [y]
    for cls, n in zip(classes, counts):
        if n == target:
            continue
        data = np.zeros((n + 1, x[0].size), np.float32)
        data[:n] = x[y == cls].reshape(n, -1)
        labels = np.full(n + 1, cls)
        labels[n] = classes[classes != cls][0]
        smote = SMOTE(sampling_strategy={int(cls): target}, k_neighbors=k, random_state=seed + int(cls))
        resampled, _ = smote.fit_resample(data, labels)
        synthetic = resampled[n + 1 :]
        del data, resampled
        new_x.append(np.clip(np.rint(synthetic), 0, 255).astype(np.uint8).reshape((-1,) + x.shape[1:]))
        new_y.append(np.full(len(synthetic), cls, np.int64))
    return np.concatenate(new_x), np.concatenate(new_y)
