"""Fit the bundle's `postprocess` section on the validation split, on the file the box runs.

Order of work: run the primary file (int8 TFLite, else the first format) over the
validation images with and without dihedral TTA; correct the class prior that SMOTE
changed; fit the temperature; keep TTA only when it gains validation accuracy; choose
the refer threshold and the sample pooling on the post-processed validation
probabilities. Then every format's test rows get the box columns, and the bundle gets
a reliability diagram and a risk-coverage curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.postprocess import PostProcess, postprocess


@dataclass
class BoxFit:
    params: PostProcess
    thresholds: dict
    info: dict  # validation.json's `postprocess` section


def priors(run) -> tuple[np.ndarray, np.ndarray]:
    """(model prior, expected prior): the training split's class frequencies are what the lab sees;
    with SMOTE the model was trained as if the classes were equally frequent."""
    from trainer.calibrate import class_prior

    labels = list(run.labels)
    y = [labels.index(i.label) for i in run.splits.get("train", []) if i.label in labels]
    expected = class_prior(y, len(labels))
    smote = bool((run.config or {}).get("smote", False))
    model = np.full(len(labels), 1.0 / len(labels)) if smote else expected
    return model, expected


def fit_box(run, primary: tuple[Path, str] | None, val_probs: np.ndarray, x_val, y_val, echo) -> BoxFit:
    """Fit tta, prior shift, temperature, refer threshold and pooling on validation (see module docstring)."""
    from edge.thresholds import choose_refer_below
    from converter.validate import run_format
    from edge.samples import DEFAULT_MIN_FIELDS
    from trainer.calibrate import box_metrics, compare_pooling, fit_postprocess, sample_cutoff, temperature_note

    model_prior, expected = priors(run)
    val_tta = run_format(primary[0], primary[1], x_val, tta=True)[0] if primary else None
    plain = fit_postprocess(y_val, val_probs, model_prior, expected, "none")
    plain_box = box_metrics(y_val, postprocess(val_probs[:, None], plain))
    chosen, chosen_passes, tta_box = plain, val_probs[:, None], None
    if val_tta is not None:
        tta = fit_postprocess(y_val, val_tta, model_prior, expected, "dihedral")
        tta_box = box_metrics(y_val, postprocess(val_tta, tta))
        if tta_box["accuracy_box"] > plain_box["accuracy_box"]:  # on only when validation shows a gain
            chosen, chosen_passes = tta, val_tta
    val_box = postprocess(chosen_passes, chosen)
    thresholds = choose_refer_below(y_val, val_box) | {"source_format": primary[1] if primary else "keras",
                                                        "on": "post-processed probabilities"}
    pooling = compare_pooling(y_val, val_box, thresholds["refer_below"])
    params = chosen.model_copy(update={"pool": pooling["chosen"]})
    slide = sample_cutoff(y_val, val_box, params.pool, DEFAULT_MIN_FIELDS)
    if slide is not None:
        thresholds["sample_refer_below"] = slide["sample_refer_below"]
        pooling["sample_cutoff"] = slide
    info = {"params": params.model_dump(), "fitted_on": "val", "source_format": thresholds["source_format"],
            "model_prior": [round(float(v), 4) for v in model_prior],
            "expected_prior": [round(float(v), 4) for v in expected],
            "val": {"without_tta": plain_box, "with_tta": tta_box, "tta_chosen": chosen.tta == "dihedral",
                    "ece_before": box_metrics(y_val, val_probs)["ece_box"], "accuracy": box_metrics(y_val, val_probs)["accuracy_box"]},
            "samples_val": pooling}
    val_right = np.asarray(val_box).argmax(1) == np.asarray(y_val)
    note = temperature_note(params.temperature, len(y_val), int((~val_right).sum()))
    if note:
        info["note"] = note
        echo(note)
    slide_words = f", slide cut-off {slide['sample_refer_below']:.3f}" if slide else ""
    echo(f"post-processing: tta {params.tta}, temperature {params.temperature:.3f}, prior shift "
         f"{params.log_prior_shift}, pooling {params.pool}{slide_words}; validation ECE {100 * info['val']['ece_before']:.2f} % "
         f"-> {100 * box_metrics(y_val, val_box)['ece_box']:.2f} %")
    return BoxFit(params, thresholds, info)


def test_columns(built_files: dict, validation: dict, test_probs: dict, x_test, y_test, fit: BoxFit,
                 out: Path, refer_below: float) -> dict[str, np.ndarray]:
    """Add accuracy_tta / accuracy_box / ece / ece_box to every row, the test-split summary and the PNGs.

    Returns each format's post-processed test probabilities (what the box would decide)."""
    from converter.validate import box_columns, run_format
    from trainer.calibrate import compare_pooling, risk_coverage
    from trainer.plots import plot_reliability, plot_risk_coverage

    boxed = {}
    for r in validation["formats"]:
        fmt = r["format"]
        if fmt not in test_probs:
            continue
        passes = run_format(built_files[fmt][0], fmt, x_test, tta=True)[0]
        r.update(box_columns(y_test, test_probs[fmt], passes, fit.params))
        use = passes if fit.params.tta == "dihedral" else test_probs[fmt][:, None]
        boxed[fmt] = postprocess(use, fit.params)
    primary = fit.info["source_format"]
    if primary in boxed:
        raw, box = test_probs[primary], boxed[primary]
        curve = risk_coverage(y_test, box)
        row = next(r for r in validation["formats"] if r["format"] == primary)
        fit.info["test"] = {"format": primary, **{k: row[k] for k in ("accuracy", "accuracy_tta", "accuracy_box",
                                                                       "ece", "ece_box")}}
        fit.info["samples_test"] = compare_pooling(y_test, box, refer_below)
        fit.info["reliability_png"] = plot_reliability(y_test, {f"{primary} raw": raw, f"{primary} box": box},
                                                       out / "reliability.png").name
        fit.info["risk_coverage_png"] = plot_risk_coverage(curve, out / "risk_coverage.png", refer_below).name
    validation["postprocess"] = fit.info
    return boxed
