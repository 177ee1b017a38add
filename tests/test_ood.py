"""The unfamiliar-input guard: its arithmetic, its image statistics, and a real converted bundle
that flags another stain, another magnification, blank and noise fields while letting familiar
fields through."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from converter import ood_fit
from edge.ood import STAT_GROUPS, Guard, OodSection, StatRegion, image_stats
from tests.test_station_browser import browser  # noqa: F401 - the real headless Chromium fixture
from trainer.synth.fields import render_field


def _section(threshold: float = 1.0, stats: dict | None = None) -> OodSection:
    return OodSection(method="mahalanobis-ppca", threshold=threshold, quantile=0.99, stats=stats or {},
                      features_dim=6)


def test_feature_score_is_the_ppca_mahalanobis_distance_to_the_nearest_class():
    rng = np.random.default_rng(0)
    d, k = 6, 2
    means = rng.normal(size=(3, d))
    directions = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :k]
    variances, rest = np.array([4.0, 2.0]), 0.5
    guard = Guard(_section(), means, directions, variances, rest)
    cov = directions @ np.diag(variances) @ directions.T + rest * (np.eye(d) - directions @ directions.T)
    inv = np.linalg.inv(cov)
    f = rng.normal(size=(5, d)) * 3
    brute = np.array([min((x - m) @ inv @ (x - m) for m in means) for x in f]) / d
    np.testing.assert_allclose(guard.feature_scores(f), brute, rtol=1e-4)
    assert guard.feature_scores(means[1])[0] == pytest.approx(0.0, abs=1e-5)


def test_fit_gaussian_recovers_the_shared_covariance():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 4000)
    centres = rng.normal(size=(4, 5)) * 10
    scale = np.diag([3.0, 1.0, 0.5, 0.5, 0.5])
    features = centres[labels] + rng.normal(size=(4000, 5)) @ scale
    means, directions, variances, rest = ood_fit.fit_gaussian(features, labels, 4)
    np.testing.assert_allclose(means, centres, atol=0.2)
    assert variances[0] == pytest.approx(9.0, rel=0.1)
    assert abs(directions[0, 0]) > 0.99


def test_auroc_counts_ties_as_half():
    assert ood_fit.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert ood_fit.auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert ood_fit.auroc(np.array([3.0]), np.array([1.0, 2.0])) == 0.0


def test_threshold_on_a_small_split_is_not_biased_low_like_its_empirical_quantile():
    rng = np.random.default_rng(2)
    splits = [np.exp(rng.normal(size=30)) for _ in range(300)]  # log-normal scores: true 99th pct e^2.326
    fitted = np.array([ood_fit.quantile_threshold(s) for s in splits])
    empirical = np.array([np.quantile(s, 0.99) for s in splits])
    true_99, true_95 = np.exp(2.3263), np.exp(1.6449)
    assert abs(np.median(fitted) / true_99 - 1) < 0.25
    assert np.median(empirical) < 0.75 * true_99  # what a 30-field split's own 99th percentile does
    assert (fitted < true_95).mean() < 0.5 * (empirical < true_95).mean()


def test_image_statistics_move_with_magnification_and_are_extreme_on_blank_fields():
    rng = np.random.default_rng(3)
    field = render_field(rng, "Pre", 128)
    crop = field[32:96, 32:96]
    zoomed = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_LINEAR)
    a, b = image_stats(field), image_stats(zoomed)
    assert b["object_size"] > a["object_size"] + 0.6  # log2: twice the radius is +1
    blank = np.full_like(field, 200)
    s = image_stats(blank)
    assert s["object_size"] == s["cell_size"] == -8.0 and s["focus"] == 0.0
    assert set(s) == {name for names in STAT_GROUPS.values() for name in names}


def test_a_group_outside_its_region_is_the_reason():
    stats = {"stain": StatRegion(mean=[0.0] * 6, inv_cov=np.eye(6).tolist(), limit=1e9),
             "focus": StatRegion(mean=[0.0], inv_cov=[[1.0]], limit=4.0),
             "scale": StatRegion(mean=[0.0] * 3, inv_cov=np.eye(3).tolist(), limit=4.0)}
    guard = Guard(_section(stats=stats), np.zeros((1, 6)), np.eye(6)[:, :1], np.ones(1), 1.0)
    base = dict.fromkeys(STAT_GROUPS["stain"], 0.0)
    assert guard.reasons({**base, "object_size": 3.0, "cell_size": 0.0, "focus": 0.0}) == ("scale",)
    assert guard.reasons({**base, "object_size": 1.0, "cell_size": 1.0, "focus": 1.0}) == ()
    assert guard.reasons({**base, "object_size": 0.0, "cell_size": 0.0, "focus": 3.0}) == ("focus", "scale")


# --------------------------------------------------------------------------- a real bundle

PER_CLASS = 100
FRESH = 50  # new fields per class from the same generator and sessions: familiar, never seen in training


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from converter.convert import convert
    from edge.backends.tflite_common import open_interpreter
    from edge.manifest import bundle_path, load_manifest
    from edge.ood import FORMAT
    from leukedge.bundle_factory import make_small_run
    from trainer.synth.fields import generate_dataset

    tmp = tmp_path_factory.mktemp("guard")
    run = make_small_run(tmp, per_class=PER_CLASS, epochs=8)
    out = convert(run, tmp / "bundle", formats=("tflite-int8",), calib=100, max_drop=100.0, progress=False,
                  echo=lambda _m: None)
    manifest = load_manifest(out)
    guard = Guard.load(manifest.ood, bundle_path(out, manifest.file(FORMAT)))
    backend = open_interpreter("ai_edge_litert.interpreter", "ai-edge-litert", "litert-cpu",
                               bundle_path(out, manifest.file("tflite-int8")), 1)
    data = generate_dataset(tmp / "fresh", per_class=PER_CLASS + FRESH, size=64, seed=0, progress=False)
    files = [f for f in sorted(Path(tmp / "fresh").rglob("*")) if f.suffix in (".png", ".jpg")
             and int(f.stem.rsplit("-", 1)[-1]) > PER_CLASS]
    fresh = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    assert len(fresh) == 4 * FRESH, data
    return out, manifest, guard, backend, fresh


def _flag_rate(guard, backend, images) -> float:
    return float(np.mean([guard.score_field(backend.infer_with_features(x)[1], x).unfamiliar for x in images]))


def test_familiar_fields_pass_and_shifted_fields_are_flagged(guarded):
    _, manifest, guard, backend, fresh = guarded
    assert backend.features_dim == manifest.ood.features_dim > len(manifest.labels)
    assert _flag_rate(guard, backend, fresh) <= 0.02
    for name, images in ood_fit.shifted_sets(fresh).items():
        assert _flag_rate(guard, backend, images) >= 0.95, name


def test_another_magnification_rendered_by_the_generator_is_flagged_for_scale(guarded):
    _, _, guard, backend, _ = guarded
    rng = np.random.default_rng(7)
    verdicts = []
    for k in range(40):
        field = render_field(rng, ("Benign", "Early", "Pre", "Pro")[k % 4], 128)
        x = cv2.resize(field[32:96, 32:96], (64, 64), interpolation=cv2.INTER_AREA)  # 2x magnification, sharp
        verdicts.append(guard.score_field(backend.infer_with_features(x)[1], x))
    assert np.mean([v.unfamiliar for v in verdicts]) >= 0.95
    assert np.mean(["scale" in v.reasons for v in verdicts]) >= 0.8


def test_bundle_reports_the_guard_in_validation_json_and_the_model_card(guarded):
    import json

    out, manifest, _, _, _ = guarded
    report = json.loads((out / "validation.json").read_text())["unfamiliar_input_guard"]
    assert report == manifest.ood.report
    assert set(report["shifted"]) == {"stain", "magnification_2x", "blank", "noise"}
    assert 0.5 < report["auroc_features"] <= 1.0
    assert manifest.ood.fit["n_train"] > manifest.ood.fit["n_val"] > 0
    assert "Unfamiliar-input guard" in (out / "MODEL_CARD.md").read_text()


# --------------------------------------------------------------------------- the agent end to end


def _run_agent(tmp_path, bundle, folder, **over) -> tuple[list[dict], list[dict], dict]:
    """The real agent over a folder (every image a field, no broker): results, samples, info."""
    from edge.agent import Agent
    from tests.test_edge_agent import config

    cfg = config(tmp_path, bundle, folder, gate={"mode": "continuous"}, **over)
    agent = Agent(cfg)
    assert agent.run() == 0
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    return ([m for m in lines if m["type"] == "result"], [m for m in lines if m["type"] == "sample"],
            agent.info())


def test_agent_refers_unfamiliar_fields_with_the_reason(guarded, tmp_path):
    from edge.messages import ResultMessage

    out, _, _, _, fresh = guarded
    folder = tmp_path / "mixed"
    folder.mkdir()
    shifted = ood_fit.shifted_sets(fresh[:6])
    for k, x in enumerate(fresh[:6]):
        cv2.imwrite(str(folder / f"a{k}-familiar.png"), x[..., ::-1])
    for k, x in enumerate(shifted["stain"]):
        cv2.imwrite(str(folder / f"b{k}-stain.png"), x[..., ::-1])
    results, samples, info = _run_agent(tmp_path, out, folder, sample={"auto_open": True, "fields_per_sample": 12})
    assert info["guard"]["on"] is True and info["guard"]["method"] == "mahalanobis-ppca"
    assert len(results) == 12
    # Half the slide unlike the training data: the slide is referred for that reason, not given a class.
    assert len(samples) == 1 and samples[0]["n_fields"] == 12 and samples[0]["n_unfamiliar"] >= 6
    assert samples[0]["decision"] == "refer"
    assert samples[0]["reason"] == "unfamiliar input: check stain, magnification, camera"
    for r in results:
        ResultMessage.model_validate({k: v for k, v in r.items() if k != "type"})
    stain = [r for r in results if r["seq"] > 6]
    assert all(r["ood"]["unfamiliar"] and r["decision"] == "refer" and r["reason"] == "unfamiliar" for r in stain)
    assert sum(r["ood"]["reason"] == "stain" for r in stain) >= 5
    familiar = [r for r in results if r["seq"] <= 6]
    assert sum(r["ood"]["unfamiliar"] for r in familiar) <= 1
    assert all(r["reason"] in (None, "not confident") for r in familiar if not r["ood"]["unfamiliar"])


def test_a_bundle_without_the_guard_loads_and_says_it_is_off(guarded, tmp_path):
    import shutil

    out, _, _, _, fresh = guarded
    bundle = tmp_path / "old"
    shutil.copytree(out, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["ood"]
    manifest["files"] = [f for f in manifest["files"] if f["format"] != "ood"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    folder = tmp_path / "fields"
    folder.mkdir()
    for k, x in enumerate(fresh[:3]):
        cv2.imwrite(str(folder / f"{k}.png"), x[..., ::-1])
    results, _, info = _run_agent(tmp_path, bundle, folder)
    assert info["guard"]["on"] is False and "no unfamiliar-input guard" in info["guard"]["why_off"]
    assert len(results) == 3 and all(r["ood"] is None for r in results)


def test_the_page_says_unfamiliar_in_words_with_the_reason(guarded, tmp_path, browser):  # noqa: F811
    """A real agent process with its page, in a real headless Chromium: a field of another stain
    is shown as unfamiliar input with the reason and what to check, not as a class."""
    from leukedge.agent_process import AgentProcess, agent_config
    from tests.broker import free_port
    from tests.test_station_browser import screenshot, text, until

    out, _, _, _, fresh = guarded
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, x in enumerate(ood_fit.shifted_sets(fresh[:4])["stain"]):
        cv2.imwrite(str(frames / f"{k}.png"), x[..., ::-1])
    port = free_port()
    cfg = agent_config(tmp_path / "agent", out, frames, None, source={"fps": 2.0, "loop": True},
                       gate={"mode": "continuous"}, ui={"listen": f"127.0.0.1:{port}"})
    agent = AgentProcess(tmp_path / "agent", cfg).start()
    try:
        browser.get(agent.page_url())
        until(browser, lambda d: "UNFAMILIAR INPUT" in text(d, "field-decision"), 60, "no unfamiliar field shown")
        shown = text(browser, "field-decision")
        assert "stain or colour unlike the training slides" in shown and "check stain" in shown
        screenshot(browser, "station-unfamiliar-800x480.png", 800, 480)
        clipped = browser.execute_script(  # read in full on the 800x480 screen, not cut off with an ellipsis
            "const e = document.getElementById('field-decision'); return e.scrollWidth > e.clientWidth;")
        assert browser.execute_script("return window.innerWidth") == 800 and not clipped
    finally:
        agent.terminate()
