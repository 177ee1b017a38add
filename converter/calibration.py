"""Calibration images for post-training quantization: class-balanced, from the training split.

Why balanced: with a skewed calibration set the activation ranges fit the majority class
and the minority class's activations clip (measured on the ALL set: Early called Benign).
Why the training split: the validation and test splits must stay unseen by every step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edge.errors import BadInput
from edge.manifest import LABELS, InputSpec
from trainer.data import load_images

MIN_CALIB = 8  # below this the ranges are guesses: refuse rather than ship them


def select_balanced(items: Sequence, n: int, seed: int = 0) -> list:
    """Up to n items dealt round-robin over the classes (each class shuffled with `seed`).

    Classes with fewer images than their share give way to the others, so the result
    has min(n, len(items)) items and is as even as the split allows. Deterministic.
    """
    groups: dict[str, list] = {label: [] for label in LABELS}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    queues = []
    for k, label in enumerate(groups):
        group = sorted(groups[label], key=lambda it: str(it.path))
        rng = np.random.default_rng([seed, k])
        queues.append([group[i] for i in rng.permutation(len(group))])
    chosen: list = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return chosen


def pin_input_range(x: np.ndarray) -> np.ndarray:
    """Copy of x whose first image holds one 0 and one 255 value.

    The converter derives the uint8 input's scale from the calibration data; with the full
    byte range present it is exactly scale 1, zero point 0, i.e. the raw camera bytes
    docs/contracts.md promises. Two pixels of one image do not move any other range measurably.
    """
    x = np.array(x, dtype=np.uint8, copy=True)
    x[0, 0, 0, :] = 0
    x[0, -1, -1, :] = 255
    return x


def load_calibration(train_items: Sequence, n: int, spec: InputSpec, seed: int = 0, progress: bool = False):
    """(x uint8 (N,H,W,3), per-class counts, warnings) for n balanced training images.

    BadInput when fewer than MIN_CALIB images can be used; a warning (returned, not
    raised) when fewer than n were available.
    """
    if n < MIN_CALIB:
        raise BadInput(f"--calib {n}: at least {MIN_CALIB} calibration images are needed")
    chosen = select_balanced(train_items, n, seed)
    if len(chosen) < MIN_CALIB:
        raise BadInput(f"training split: only {len(chosen)} calibration images; at least {MIN_CALIB} are needed")
    x, y, bad = load_images(chosen, spec, progress=progress) if chosen else (None, [], [])
    used = 0 if x is None else len(x)
    if used < MIN_CALIB:
        why = f" ({len(bad)} unreadable)" if bad else ""
        raise BadInput(
            f"training split: only {used} usable calibration images{why}; at least {MIN_CALIB} are needed"
        )
    counts = {label: int(np.sum(np.asarray(y) == k)) for k, label in enumerate(LABELS)}
    warnings = []
    if used < n:
        warnings.append(
            f"calibration used {used} images, fewer than the {n} asked for "
            f"(the training split has no more usable ones); int8 ranges may be less reliable"
        )
    missing = [label for label, c in counts.items() if c == 0]
    if missing:
        warnings.append(f"calibration has no images of {', '.join(missing)}")
    return pin_input_range(x), counts, warnings
