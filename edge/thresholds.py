"""The abstain band's rule: the lowest top-probability threshold at which the accepted
validation predictions are at most 1 % wrong, so `refer` catches the uncertain rest.

Pure numpy, here in edge so that the converter (which writes it into the manifest) and
the trainer (whose report shows the float model's band) apply one rule without either
depending on the other.
"""

from __future__ import annotations

import numpy as np

MAX_ACCEPTED_ERROR = 0.01


def choose_refer_below(y: np.ndarray, probs: np.ndarray, max_error: float = MAX_ACCEPTED_ERROR) -> dict:
    """Smallest threshold t such that predictions with top prob >= t are at most `max_error` wrong.

    Candidates are the observed top probabilities (ties accepted or refused together).
    When even the most confident group is too often wrong, t is 1.0: everything is
    referred, and the returned dict says so.
    """
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    n = len(y)
    if n == 0:
        return {"refer_below": 0.5, "max_error_accepted": max_error, "n_val": 0,
                "note": "no validation images: default threshold"}
    top = probs.max(1)
    wrong = probs.argmax(1) != y
    for t in np.unique(top):  # ascending: the first that passes accepts the most
        accepted = top >= t
        err = float(wrong[accepted].mean())
        if err <= max_error:
            return {"refer_below": float(np.float32(t)), "max_error_accepted": max_error, "n_val": n,
                    "val_coverage": float(accepted.mean()), "val_error_accepted": err}
    return {"refer_below": 1.0, "max_error_accepted": max_error, "n_val": n, "val_coverage": 0.0,
            "val_error_accepted": None,
            "note": f"no threshold keeps accepted validation errors <= {max_error:.0%}: every prediction is referred"}
