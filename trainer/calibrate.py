"""Fitting the manifest's `postprocess` section, and the figures that say what it does.

- Prior correction: SMOTE trains on equal classes, so the model behaves as if every class
  were equally likely; `prior_shift` gives log(model prior) - log(expected prior), which
  `edge.postprocess.postprocess` subtracts from the log-probabilities (logit adjustment).
- Temperature: one scalar T fitted by minimising the validation log-loss of the
  post-processed probabilities (Guo et al. 2017), on the outputs of the file the box runs.
- Sample pooling: fields of one slide are pooled; `compare_pooling` builds synthetic slides
  from labelled fields and measures which rule gives better-calibrated sample decisions.
- Risk-coverage: the error among accepted fields against the share accepted, per threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.postprocess import PostProcess, pool, postprocess
from edge.thresholds import choose_refer_below
from trainer.plots import plot_reliability
from trainer.report import expected_calibration_error

# The floor: on a validation split with (almost) no errors the log-loss keeps falling as T
# shrinks, so an unbounded fit sharpens every field to ~100 % and a wrong field would be as
# sure as a right one. 0.5 (odds at most squared) is as far as the kit trusts such a fit.
T_RANGE = (0.5, 20.0)


def class_prior(y, n_classes: int) -> np.ndarray:
    """Class frequencies of integer labels `y` (a class never seen gets half a count, never zero)."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 0.5
    return counts / counts.sum()


def prior_shift(model_prior, expected_prior) -> list[float]:
    """log(model prior) - log(expected prior), centred (softmax ignores a common offset)."""
    d = np.log(np.asarray(model_prior, np.float64)) - np.log(np.asarray(expected_prior, np.float64))
    return [round(float(v), 6) for v in d - d.mean()]


def _as_passes(probs) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    return p[:, None, :] if p.ndim == 2 else p


def nll(y, probs) -> float:
    p = np.asarray(probs, np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), np.asarray(y)], 1e-12, 1.0))))


def fit_temperature(y, passes, shift: list[float] | None = None, tta: str = "none") -> float:
    """The T in T_RANGE minimising the log-loss of postprocess(passes) on labelled images (see T_RANGE)."""
    from scipy.optimize import minimize_scalar

    passes = _as_passes(passes)
    if len(y) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        params = PostProcess(tta=tta, temperature=float(np.exp(log_t)), log_prior_shift=shift)
        return nll(y, postprocess(passes, params))

    res = minimize_scalar(loss, bounds=tuple(np.log(T_RANGE)), method="bounded", options={"xatol": 1e-4})
    return round(float(np.exp(res.x)), 5)


def temperature_note(temperature: float, n_val: int, wrong: int) -> str | None:
    """A manifest warning when the fit stopped at T_RANGE's floor, else None."""
    if temperature > T_RANGE[0] * 1.001:
        return None
    return (f"temperature stopped at its floor {T_RANGE[0]}: validation ({n_val} fields, {wrong} wrong) has too few "
            "errors to show how sure the model may be; its confidences are at most that sharp, not fitted")


def box_metrics(y, box_probs) -> dict:
    """What the box decides (argmax after post-processing) and how well its confidence is calibrated."""
    p = np.asarray(box_probs, np.float64)
    y = np.asarray(y)
    if len(y) == 0:
        return {"accuracy_box": None, "ece_box": None, "nll_box": None}
    return {"accuracy_box": float(np.mean(p.argmax(1) == y)), "ece_box": expected_calibration_error(y, p),
            "nll_box": nll(y, p)}


def fit_postprocess(y_val, val_passes, model_prior, expected_prior, tta: str = "none",
                    correct_prior: bool = True) -> PostProcess:
    """PostProcess fitted on validation passes ((N, P, C) or (N, C)): prior shift, then temperature."""
    shift = prior_shift(model_prior, expected_prior) if correct_prior else None
    if shift is not None and not any(abs(v) > 1e-9 for v in shift):
        shift = None
    temperature = fit_temperature(y_val, val_passes, shift, tta)
    return PostProcess(tta=tta, temperature=temperature, log_prior_shift=shift)


def synthetic_slides(y, n_slides: int = 200, fields: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(slide labels (S,), field indices (S, F)): each slide draws `fields` images of one class.

    Slides take their class in proportion to the data and their fields with replacement,
    so a folder of labelled fields stands in for a set of scanned slides."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    slide_y = rng.choice(y, n_slides) if len(classes) else np.zeros(0, np.int64)
    idx = np.stack([rng.choice(np.flatnonzero(y == c), fields) for c in slide_y]) if n_slides else np.zeros((0, fields), int)
    return slide_y, idx


def compare_pooling(y, box_probs, refer_below: float, n_slides: int = 200, fields: int = 10,
                    seed: int = 0) -> dict:
    """Sample-level accuracy, ECE and refer rate of each pooling rule on synthetic slides, and the better one."""
    box_probs = np.asarray(box_probs, np.float64)
    slide_y, idx = synthetic_slides(y, n_slides, fields, seed)
    out: dict = {"slides": int(len(slide_y)), "fields_per_slide": fields}
    for method in ("mean_prob", "mean_log_prob"):
        pooled = np.stack([pool(box_probs[i], method) for i in idx]) if len(idx) else np.zeros((0, box_probs.shape[1]))
        top = pooled.max(1) if len(pooled) else np.zeros(0)
        out[method] = {"accuracy": float(np.mean(pooled.argmax(1) == slide_y)) if len(pooled) else None,
                       "ece": expected_calibration_error(slide_y, pooled) if len(pooled) else None,
                       "refer_rate": float(np.mean(top < refer_below)) if len(pooled) else None}
    ece = {m: out[m]["ece"] if out[m]["ece"] is not None else 1.0 for m in ("mean_prob", "mean_log_prob")}
    out["chosen"] = min(ece, key=lambda m: (ece[m], m != "mean_prob"))  # ties keep the plain mean
    return out


def sample_cutoff(y, box_probs, method: str, fields: int, n_slides: int = 400, seed: int = 0) -> dict | None:
    """The slide decision's cut-off: the field rule (edge.thresholds.choose_refer_below: the lowest
    top probability whose accepted decisions are at most 1 % wrong) applied to simulated slides of
    `fields` validation fields pooled by `method`. A pooled probability is calibrated unlike one
    field's, so a field's cut-off refers slides whose pooled class is right. Slides of the fewest
    fields a decision may rest on (min_fields) are the least certain ones. The simulated fields are
    independent draws; fields of one real slide are more alike, which this cannot see (docs/edge.md).
    None when there are no validation fields (the box then uses the field cut-off)."""
    y = np.asarray(y)
    if len(y) == 0:
        return None
    box_probs = np.asarray(box_probs, np.float64)
    slide_y, idx = synthetic_slides(y, n_slides, fields, seed)
    chosen = choose_refer_below(slide_y, np.stack([pool(box_probs[i], method) for i in idx]))
    return {"sample_refer_below": chosen["refer_below"], "slides": int(n_slides), "fields_per_slide": int(fields),
            "pooling": method, "slide_coverage": chosen.get("val_coverage"),
            "slide_error_accepted": chosen.get("val_error_accepted")}


def risk_coverage(y, probs) -> dict:
    """Coverage and error among accepted predictions for every threshold on the top probability."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(y)
    order = np.argsort(-p.max(1), kind="stable")
    wrong = (p.argmax(1) != y)[order].astype(np.float64)
    n = np.arange(1, len(y) + 1)
    return {"threshold": p.max(1)[order].tolist(), "coverage": (n / max(len(y), 1)).tolist(),
            "risk": (np.cumsum(wrong) / n).tolist()}


def calibration_summary(y_val, val_passes, y_test, test_passes, model_prior, expected_prior,
                        tta: str = "none") -> tuple[PostProcess, dict]:
    """Fit on validation; ECE and accuracy before (raw argmax of one pass) and after, on both splits."""
    params = fit_postprocess(y_val, val_passes, model_prior, expected_prior, tta)
    info: dict = {"fitted_on": "val", "temperature": params.temperature, "log_prior_shift": params.log_prior_shift,
                  "model_prior": [round(float(v), 4) for v in model_prior],
                  "expected_prior": [round(float(v), 4) for v in expected_prior]}
    for name, y, passes in (("val", y_val, val_passes), ("test", y_test, test_passes)):
        passes = _as_passes(passes)
        raw = passes[:, 0]
        after = postprocess(passes, params)
        info[name] = {"accuracy": float(np.mean(raw.argmax(1) == np.asarray(y))) if len(y) else None,
                      "ece_before": expected_calibration_error(y, raw) if len(y) else None,
                      **box_metrics(y, after)}
    return params, info


def predict_passes(model, x: np.ndarray, batch: int, tta: bool) -> np.ndarray:
    """Keras probabilities as (N, P, C): one pass, or the eight dihedral views in edge.postprocess order."""
    def run(v):
        return np.asarray(model.predict(v, batch_size=batch, verbose=0), np.float64)

    if not tta:
        return run(x)[:, None]
    turns = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    views = turns + [t[:, :, ::-1] for t in turns]
    return np.stack([run(np.ascontiguousarray(v)) for v in views], axis=1)


def model_report(model, x_val, y_val, x_test, y_test, model_prior, expected_prior, batch: int,
                 png: Path | None = None) -> dict:
    """The float model's `postprocess` block for report.json: fitted on validation, measured on test.

    Same choices as the converter (which refits on the int8 file): prior shift, temperature,
    TTA kept only with a validation gain, pooling by sample-level ECE on synthetic slides."""
    val, test = predict_passes(model, x_val, batch, True), predict_passes(model, x_test, batch, True)
    plain = fit_postprocess(y_val, val[:, :1], model_prior, expected_prior, "none")
    tta = fit_postprocess(y_val, val, model_prior, expected_prior, "dihedral")
    gain = box_metrics(y_val, postprocess(val, tta))["accuracy_box"] - box_metrics(y_val, postprocess(val[:, :1], plain))["accuracy_box"]
    params = tta if gain > 0 else plain
    use_val, use_test = (val, test) if params.tta == "dihedral" else (val[:, :1], test[:, :1])
    refer = choose_refer_below(y_val, postprocess(use_val, params))["refer_below"]
    params = params.model_copy(update={"pool": compare_pooling(y_val, postprocess(use_val, params), refer)["chosen"]})
    raw, box = test[:, 0], postprocess(use_test, params)
    out = {"params": params.model_dump(), "fitted_on": "val", "val_tta_gain": gain, "refer_below": refer,
           "model_prior": [round(float(v), 4) for v in model_prior],
           "expected_prior": [round(float(v), 4) for v in expected_prior],
           "accuracy_tta": float(np.mean(test.mean(1).argmax(1) == y_test)),
           "ece_before": expected_calibration_error(y_test, raw), **box_metrics(y_test, box),
           "samples": compare_pooling(y_test, box, refer)}
    if png is not None:
        out["reliability_png"] = str(plot_reliability(y_test, {"raw": raw, "post-processed": box}, png))
    return out


def apply_report(model, x, y, params: PostProcess, batch: int, refer_below: float) -> dict:
    """`evaluate` on a folder with a run's fitted parameters: with/without TTA, ECE before/after, samples."""
    passes = predict_passes(model, x, batch, True)
    box = postprocess(passes if params.tta == "dihedral" else passes[:, :1], params)
    return {"params": params.model_dump(), "accuracy_tta": float(np.mean(passes.mean(1).argmax(1) == y)),
            "ece_before": expected_calibration_error(y, passes[:, 0]), **box_metrics(y, box),
            "samples": compare_pooling(y, box, refer_below)}
