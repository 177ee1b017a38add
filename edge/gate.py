"""The field gate: classify each new field of view once.

A frame passes when the picture has been still for `still_frames` frames (mean
absolute difference to the previous frame below `motion_threshold`), is in focus
(variance of the Laplacian over the variance of the picture above
`focus_threshold`: a contrast-independent sharpness, so sparse and crowded fields
compare alike; a near-uniform picture, below `min_contrast` grey levels of standard
deviation, is `blank`) and differs from the last
classified field (mean absolute difference above `novelty_threshold`). All three are
measured on a small grey copy of the frame (about `analysis_width` pixels wide), which
is cheap and insensitive to sensor noise. `mode: continuous` passes every Nth frame.

A still capture (each image of a folder, a single image file) is a deliberate picture,
not a moment of a stream: it needs no stillness and no novelty over its neighbour, only
to be sharp and not blank. Rejections are counted by reason, never classified.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np

from edge.pixels import box_shrink

REASONS = ("moving", "settling", "blank", "blurred", "same_field", "skipped")
MIN_ROWS = 8  # the analysis copy keeps at least this many pixels on its short side


class Verdict(NamedTuple):
    accept: bool
    reason: str  # "field" when accepted, else one of REASONS
    focus: float


class Gate:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._prev: np.ndarray | None = None
        self._last_field: np.ndarray | None = None
        self._still = 0
        self._n = 0
        self.best_focus = 0.0  # sharpest frame measured: a hint for focus_threshold

    def _small_grey(self, rgb: np.ndarray) -> np.ndarray:
        """Grey, shrunk by a whole factor towards `analysis_width` (edge.pixels.box_shrink).

        The factor never leaves the short side under MIN_ROWS, so a panorama-shaped frame
        (60000x20) shrinks less instead of to nothing.
        """
        import cv2

        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        f = max(1, min(round(grey.shape[1] / self.cfg.analysis_width), min(grey.shape) // MIN_ROWS))
        return box_shrink(grey, f)

    @staticmethod
    def focus_of(grey: np.ndarray) -> tuple[float, float]:
        """(sharpness, contrast): var(Laplacian) / var(grey), and the grey standard deviation."""
        import cv2

        sd = float(cv2.meanStdDev(grey)[1][0, 0])
        lap_sd = float(cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))[1][0, 0])
        return lap_sd**2 / max(sd**2, 1e-6), sd

    def check(self, rgb: np.ndarray, still: bool = False) -> Verdict:
        """The verdict on one frame; `still`: a still capture (see the module docstring)."""
        grey = self._small_grey(rgb)
        self._n += 1
        if self.cfg.mode == "continuous":
            ok = (self._n - 1) % self.cfg.every_n == 0
            return self._count(Verdict(ok, "field" if ok else "skipped", self.focus_of(grey)[0] if ok else 0.0))
        if still:
            return self._count(self._remember(self._quality(grey), grey))
        moved = self._prev is None or grey.shape != self._prev.shape or _mad(grey, self._prev) >= self.cfg.motion_threshold
        self._prev = grey
        self._still = 0 if moved else self._still + 1
        if moved:  # most frames of a pan end here: focus is measured only for still ones
            return self._count(Verdict(False, "moving", 0.0))
        if self._still < self.cfg.still_frames:
            return self._count(Verdict(False, "settling", 0.0))
        v = self._quality(grey)
        last = self._last_field
        if v.accept and last is not None and last.shape == grey.shape and _mad(grey, last) < self.cfg.novelty_threshold:
            v = Verdict(False, "same_field", v.focus)
        return self._count(self._remember(v, grey))

    def _quality(self, grey: np.ndarray) -> Verdict:
        """`blank`, `blurred` or fit to classify (`field`): the checks every frame gets."""
        focus, contrast = self.focus_of(grey)
        self.best_focus = max(self.best_focus, focus)
        if contrast < self.cfg.min_contrast:
            return Verdict(False, "blank", focus)
        if focus < self.cfg.focus_threshold:
            return Verdict(False, "blurred", focus)
        return Verdict(True, "field", focus)

    def _remember(self, v: Verdict, grey: np.ndarray) -> Verdict:
        if v.accept:
            self._last_field = grey
        return v

    def explain(self) -> str:
        """Why frames were rejected so far, with the setting behind each reason (for the log)."""
        hints = {
            "moving": f"differ from the previous frame by gate.motion_threshold ({self.cfg.motion_threshold}) or more",
            "settling": f"still for fewer than gate.still_frames ({self.cfg.still_frames}) frames",
            "blank": f"grey contrast under gate.min_contrast ({self.cfg.min_contrast})",
            "blurred": f"sharpness under gate.focus_threshold ({self.cfg.focus_threshold}; "
                       f"sharpest seen {self.best_focus:.3g})",
            "same_field": f"within gate.novelty_threshold ({self.cfg.novelty_threshold}) of the last field",
            "skipped": f"between every gate.every_n ({self.cfg.every_n}) frames",
        }
        parts = [f"{n} {reason} ({hints[reason]})" for reason, n in self.rejected.most_common()]
        return "; ".join(parts) or "no frame reached the gate"

    def _count(self, v: Verdict) -> Verdict:
        if v.accept:
            self.accepted += 1
        else:
            self.rejected[v.reason] += 1
        return v


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 grey images."""
    import cv2

    return float(cv2.mean(cv2.absdiff(a, b))[0])
