"""edge.postprocess.postprocess and its fitting (trainer.calibrate): the contract order, dihedral TTA,
prior correction on imbalanced classes, temperature scaling, sample pooling, risk-coverage.

The calibration tests use a simulated classifier whose exact posterior is known (Gaussian
classes), so "the fitted correction moves it toward the truth" is checkable; the
conversion and agent tests (test_postprocess_bundle.py) run the same code on real models.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.errors import BundleError
from edge.manifest import Manifest, load_manifest
from edge.postprocess import PostProcess, postprocess
from edge.postprocess import classify, dihedral, pool
from edge.thresholds import choose_refer_below
from trainer.calibrate import (T_RANGE, box_metrics, class_prior, compare_pooling, fit_postprocess, fit_temperature,
                               prior_shift, temperature_note, risk_coverage, sample_cutoff, synthetic_slides)
from trainer.report import expected_calibration_error


def test_identity_is_the_old_behaviour_and_absent_section_loads(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 6).astype(np.float32)
    np.testing.assert_array_equal(postprocess(p[:, None]), p)  # one pass, no parameters: unchanged
    np.testing.assert_array_equal(postprocess(p[:, None], PostProcess()), p)
    old = {"schema_version": 1, "name": "old", "arch": "custom_cnn", "files": []}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert load_manifest(tmp_path).postprocess == PostProcess()
    bad = old | {"postprocess": {"tta": "none", "temperature": 1.0, "log_prior_shift": [0.1, 0.2]}}
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="log_prior_shift has 2 numbers for 4 labels"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(old | {"postprocess": {"temperature": 0}}))
    with pytest.raises(BundleError, match="postprocess.temperature"):
        load_manifest(tmp_path)


def test_contract_order_mean_log_shift_temperature_softmax():
    passes = np.array([[[0.7, 0.1, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1]]])  # one field, two passes
    params = PostProcess(tta="dihedral", temperature=2.0, log_prior_shift=[0.5, -0.5, 0.0, 0.0])
    mean = passes.mean(1)[0]
    z = (np.log(np.clip(mean, 1e-6, 1)) - np.array([0.5, -0.5, 0, 0])) / 2.0
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(postprocess(passes, params)[0], expected, rtol=1e-6)
    zero = np.array([[[1.0, 0.0, 0.0, 0.0]]])  # log clipped at 1e-6, never -inf
    assert np.isfinite(postprocess(zero, params)).all()


def test_dihedral_views_are_the_eight_symmetries():
    x = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    v = dihedral(x)
    assert v.shape == (8, 5, 5, 3) and len({a.tobytes() for a in v}) == 8
    np.testing.assert_array_equal(v[0], x)
    for a in v:  # closed under the group: rotating any view gives another view
        assert any(np.array_equal(np.rot90(a), b) for b in v) and any(np.array_equal(a[::-1], b) for b in v)
    with pytest.raises(ValueError, match="square"):
        dihedral(np.zeros((4, 6, 3), np.uint8))


def test_classify_runs_every_pass_and_tta_makes_an_oriented_model_invariant():
    """A model that looks at the top-left corner changes with orientation; with TTA its answer does not."""
    def oriented(img):
        score = img[:2, :2].mean(axis=(0, 1)).astype(np.float64)
        e = np.exp(np.append(score, 0.0) / 40.0)
        return (e / e.sum()).astype(np.float32)

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    calls = []
    params = PostProcess(tta="dihedral")
    out = classify(lambda v: calls.append(v) or oriented(v), x, params)
    assert len(calls) == 8
    turned = [classify(oriented, np.rot90(x, k), params) for k in range(4)] + [classify(oriented, x[:, ::-1], params)]
    for t in turned:
        np.testing.assert_allclose(t, out, atol=1e-6)
    plain = [classify(oriented, np.rot90(x, k), PostProcess()) for k in range(4)]
    assert max(np.abs(a - plain[0]).max() for a in plain) > 1e-3  # without TTA it does change


def _gaussian_world(n, prior, seed, sep=1.6):
    """Four 2-D Gaussian classes; returns labels and the posterior under a *uniform* prior (what a
    SMOTE-trained model learns), made over-confident by a temperature of 0.5."""
    rng = np.random.default_rng(seed)
    centres = sep * np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)
    y = rng.choice(4, n, p=prior)
    x = centres[y] + rng.normal(size=(n, 2)) * 0.6
    loglik = -((x[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * 0.36)
    z = loglik / 0.5
    p = np.exp(z - z.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


def test_prior_shift_and_temperature_on_imbalanced_classes():
    """SMOTE-like model (uniform prior) on data where Benign is rare: the fitted shift and T improve
    accuracy and calibration on a held-out set drawn from the data's prior."""
    prior = np.array([0.1, 0.4, 0.25, 0.25])
    y_train, _ = _gaussian_world(3000, prior, 0)
    y_val, p_val = _gaussian_world(2000, prior, 1)
    y_test, p_test = _gaussian_world(4000, prior, 2)
    expected = class_prior(y_train, 4)
    shift = prior_shift(np.full(4, 0.25), expected)
    assert shift[0] > 0 > shift[1]  # the rare class is pushed down, the common one up
    params = fit_postprocess(y_val, p_val, np.full(4, 0.25), expected)
    assert params.log_prior_shift == shift and 1.2 < params.temperature < 3.5  # undoes the 0.5 sharpening
    before, after = box_metrics(y_test, p_test), box_metrics(y_test, postprocess(p_test[:, None], params))
    shift_only = box_metrics(y_test, postprocess(p_test[:, None], PostProcess(log_prior_shift=shift)))
    assert shift_only["accuracy_box"] > before["accuracy_box"] + 0.005
    assert after["accuracy_box"] == shift_only["accuracy_box"]  # temperature never changes the argmax
    assert after["ece_box"] < 0.02 < before["ece_box"]
    assert after["nll_box"] < before["nll_box"]


def test_temperature_fit_recovers_known_temperature():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3000, 4)) * 2.0
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=q) for q in true])
    sharp = np.exp(logits * 3.0) / np.exp(logits * 3.0).sum(1, keepdims=True)  # T=3 would undo it
    assert abs(fit_temperature(y, sharp) - 3.0) < 0.3


def test_temperature_stops_at_its_floor_when_validation_has_no_errors():
    """Every validation field right: log-loss falls as T shrinks, so the fit would sharpen without end."""
    rng = np.random.default_rng(5)
    y = rng.choice(4, 300)
    logits = rng.normal(size=(300, 4)) + 6.0 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert (probs.argmax(1) == y).all()
    t = fit_temperature(y, probs)
    assert t == pytest.approx(T_RANGE[0], rel=1e-3)
    note = temperature_note(t, 300, 0)
    assert "floor 0.5" in note and "300 fields, 0 wrong" in note
    assert temperature_note(1.3, 300, 4) is None


def test_pooling_choice_on_synthetic_slides():
    """Slides of ten fields whose errors are independent: the pooled sample is nearly always right,
    so averaging probabilities stays under-confident while the mean of log-probs (product rule)
    sharpens toward the truth; the comparison measures both and keeps the better-calibrated one."""
    rng = np.random.default_rng(4)
    n = 2000
    y = rng.choice(4, n)
    slide_bias = rng.normal(size=(n, 4)) * 1.2  # per-field nuisance the pooling cannot average away
    logits = 2.0 * np.eye(4)[y] + slide_bias
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cmp = compare_pooling(y, probs, refer_below=0.6, n_slides=300, fields=10, seed=0)
    assert set(cmp) >= {"mean_prob", "mean_log_prob", "chosen", "slides"}
    chosen, other = cmp["chosen"], ({"mean_prob", "mean_log_prob"} - {cmp["chosen"]}).pop()
    assert cmp[chosen]["ece"] <= cmp[other]["ece"] and chosen == "mean_log_prob"
    assert cmp["mean_log_prob"]["refer_rate"] < cmp["mean_prob"]["refer_rate"]
    for m in ("mean_prob", "mean_log_prob"):
        assert 0.0 <= cmp[m]["refer_rate"] <= 1.0 and cmp[m]["accuracy"] > 0.9
    np.testing.assert_allclose(pool(probs[:3], "mean_prob"), probs[:3].mean(0), rtol=1e-6)
    g = pool(probs[:3], "mean_log_prob")
    assert abs(float(g.sum()) - 1.0) < 1e-5 and g.argmax() == np.log(probs[:3]).mean(0).argmax()


def test_slide_cutoff_is_the_field_rule_on_pooled_simulated_slides():
    """Fields right 70 % of the time with a modest top probability: a field's cut-off refers most
    of them, while pooled slides of five such fields are almost always right, so the slide's own
    cut-off accepts far more slides at the same 1 % error."""
    rng = np.random.default_rng(1)
    n = 1200
    y = rng.choice(4, n)
    logits = 1.2 * np.eye(4)[y] + rng.normal(size=(n, 4)) * 0.8
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    field_cut = choose_refer_below(y, probs)["refer_below"]
    got = sample_cutoff(y, probs, "mean_prob", fields=5, n_slides=400, seed=0)
    slide_y, idx = synthetic_slides(y, 400, 5, 0)
    pooled = np.stack([pool(probs[i], "mean_prob") for i in idx])
    assert got["sample_refer_below"] == choose_refer_below(slide_y, pooled)["refer_below"]  # the same rule
    accepted = pooled.max(1) >= got["sample_refer_below"]
    assert np.mean(pooled[accepted].argmax(1) != slide_y[accepted]) <= 0.01
    assert np.mean(pooled.max(1) >= field_cut) < got["slide_coverage"]  # the field's cut-off would refer more slides
    assert got["sample_refer_below"] < field_cut and got["fields_per_slide"] == 5
    assert sample_cutoff(np.zeros(0, int), np.zeros((0, 4)), "mean_prob", 5) is None  # no validation: field cut-off


def test_risk_coverage_curve():
    y = np.array([0, 1, 2, 3, 0])
    probs = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.6, 0, 0.4, 0], [0, 0, 0.3, 0.7], [0.1, 0.5, 0.2, 0.2]])
    c = risk_coverage(y, probs)
    assert c["coverage"][-1] == 1.0 and c["risk"][0] == 0.0
    assert abs(c["risk"][-1] - 2 / 5) < 1e-9  # full coverage: the plain error rate
    assert c["threshold"] == sorted(c["threshold"], reverse=True)


def test_ece_report_helper_matches():
    y, p = _gaussian_world(500, np.full(4, 0.25), 5)
    assert box_metrics(y, p)["ece_box"] == expected_calibration_error(y, p)
    assert Manifest(name="m", arch="custom_cnn").postprocess.is_identity()
