"""The one post-processing rule between a model's softmax and a decision.

The agent, `leukedge bench`, `leukedge evaluate` and the converter's validation all call
`postprocess`, so "what the box decides" means one thing everywhere (a parity test holds
the agent and the validation equal). Order, fixed by the manifest contract:

    mean of the TTA passes' probabilities -> log (clipped at 1e-6) -> minus log_prior_shift
    -> divide by temperature -> softmax -> then sample pooling and the refer threshold.

The model is trained on a SMOTE-balanced split, so its implied class prior is not the
data's; `log_prior_shift` = log(model prior) - log(expected prior) undoes that (logit
adjustment). The temperature makes the top probability mean what it says (fitted on
validation by the converter). A manifest without `postprocess` is the identity.
Pure numpy: the box never imports a deep-learning framework for this.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

LOG_CLIP = 1e-6
TTA_PASSES = {"none": 1, "dihedral": 8}


class PostProcess(BaseModel):
    """Manifest section `postprocess`; the defaults are the identity (older bundles)."""

    model_config = ConfigDict(extra="forbid")
    tta: Literal["none", "dihedral"] = "none"
    temperature: float = Field(1.0, gt=0.0, le=100.0)
    log_prior_shift: list[float] | None = None  # one number per label; None = no shift
    pool: Literal["mean_prob", "mean_log_prob"] = "mean_prob"  # how a sample pools its fields

    def is_identity(self) -> bool:
        return self.tta == "none" and self.temperature == 1.0 and not any(self.log_prior_shift or [])


def dihedral(x: np.ndarray) -> np.ndarray:
    """The eight rotations/flips of one HxWx3 image -> (8, H, W, 3); view 0 is the image itself.

    A smear field has no up or left, so every view is an equally valid picture of it.
    Non-square inputs only keep their shape under the flips and 180-degree turn, so the
    model input must be square (the kit's centre-square crop guarantees it)."""
    if x.ndim != 3 or x.shape[0] != x.shape[1]:
        raise ValueError(f"dihedral TTA needs a square HxWx3 input, got {x.shape}")
    turns = [np.rot90(x, k, axes=(0, 1)) for k in range(4)]
    return np.ascontiguousarray(np.stack(turns + [t[:, ::-1] for t in turns]))


def views(x: np.ndarray, params: PostProcess | None) -> np.ndarray:
    """The inputs one field is run on: (1, H, W, 3) without TTA, (8, H, W, 3) with dihedral."""
    if params is not None and params.tta == "dihedral":
        return dihedral(x)
    return x[None]


def postprocess(passes: np.ndarray, params: PostProcess | None = None) -> np.ndarray:
    """Model probabilities of shape (..., P, C) (P passes of one field) -> decision probabilities (..., C).

    One field without TTA is `probs[None]`; a batch of N fields with eight passes is (N, 8, C)."""
    p = np.asarray(passes, np.float64)
    if p.ndim < 2:
        raise ValueError(f"postprocess wants (..., passes, classes), got shape {p.shape}")
    mean = p.mean(axis=-2)
    if params is None or params.is_identity():
        return mean.astype(np.float32)  # exactly what older bundles did
    z = np.log(np.clip(mean, LOG_CLIP, 1.0))
    if params.log_prior_shift:
        shift = np.asarray(params.log_prior_shift, np.float64)
        if shift.shape != (p.shape[-1],):
            raise ValueError(f"log_prior_shift has {shift.size} numbers for {p.shape[-1]} classes")
        z = z - shift
    z = z / params.temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def classify(infer: Callable[[np.ndarray], np.ndarray], x: np.ndarray, params: PostProcess | None) -> np.ndarray:
    """One preprocessed field through a backend's `infer`, TTA passes included -> decision probabilities."""
    return classify_with_features(lambda view: (infer(view), None), x, params)[0]


def classify_with_features(infer_with_features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
                           x: np.ndarray, params: PostProcess | None) -> tuple[np.ndarray, np.ndarray | None]:
    """`classify`, and the penultimate features of the unturned view from the same invokes (None
    when the model has no features output): what the unfamiliar-input guard scores."""
    passes, features = [], None
    for k, view in enumerate(views(x, params)):
        probs, got = infer_with_features(view)
        passes.append(probs)
        features = got if k == 0 else features
    return postprocess(np.stack(passes), params), features


def pool(fields: np.ndarray, method: str = "mean_prob") -> np.ndarray:
    """Fields' decision probabilities (F, C) -> one sample's probabilities (C,).

    mean_prob averages the probabilities (robust when fields are correlated, as fields
    of one slide are); mean_log_prob is the renormalised geometric mean (a product of
    experts, sharper and over-confident when fields are not independent)."""
    f = np.asarray(fields, np.float64)
    if method == "mean_log_prob":
        z = np.log(np.clip(f, LOG_CLIP, 1.0)).mean(axis=0)
        e = np.exp(z - z.max())
        return (e / e.sum()).astype(np.float32)
    if method != "mean_prob":
        raise ValueError(f"unknown pooling {method!r}")
    return f.mean(axis=0).astype(np.float32)
