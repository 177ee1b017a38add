"""Controlled shifts (trainer/shifts.py) and the `leukedge robustness` report, end to end."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.manifest import LABELS
from trainer.shifts import LEVELS, SHIFTS, apply_shift, apply_to_batch
from trainer.synth.fields import render_field


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return render_field(np.random.default_rng(5), "Pre", 96)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --------------------------------------------------------------------------- shifts


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_shift_grows_with_strength_and_is_deterministic(image, name):
    outs = [apply_shift(image, name, level) for level in LEVELS]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == image.shape
    dists = [diff(out, image) for out in outs]
    assert dists[0] > 0.3, f"{name} level 1 hardly changes the image ({dists})"
    assert dists[0] < dists[1] < dists[2], f"{name} is not monotonic in strength: {dists}"
    for level, out in zip(LEVELS, outs):
        assert np.array_equal(apply_shift(image.copy(), name, level), out)


def test_level_zero_is_the_unchanged_image(image):
    assert apply_shift(image, "hue", 0) is image


def test_shifts_move_colour_the_way_they_say(image):
    mean = lambda x: x.reshape(-1, 3).astype(np.float64).mean(axis=0)  # noqa: E731
    hsv = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float64).mean(axis=0)  # noqa: E731
    r, _, b = mean(image)
    r_w, _, b_w = mean(apply_shift(image, "warm", 2))
    r_c, _, b_c = mean(apply_shift(image, "cool", 2))
    assert r_w > r and b_w < b and r_c < r and b_c > b
    assert mean(apply_shift(image, "brightness", 2)).sum() < 0.75 * mean(image).sum()
    assert hsv(apply_shift(image, "saturation", 2))[1] < 0.6 * hsv(image)[1]
    assert diff(apply_shift(image, "hue", 3)[..., 0:1], image[..., 0:1]) > 0  # hue rotation recolours
    blurred = apply_shift(image, "blur", 3)
    assert cv2.Laplacian(blurred, cv2.CV_64F).var() < 0.2 * cv2.Laplacian(image, cv2.CV_64F).var()


def test_blur_strength_is_relative_to_the_field_size():
    big = render_field(np.random.default_rng(1), "Pro", 224)
    small = cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA)
    blur_then_shrink = cv2.resize(apply_shift(big, "blur", 2), (112, 112), interpolation=cv2.INTER_AREA)
    assert diff(apply_shift(small, "blur", 2), blur_then_shrink) < 2.0


def test_batches_and_bad_arguments(image):
    from edge.errors import BadInput

    batch = np.stack([image, image[::-1]])
    out = apply_to_batch(batch, "jpeg", 3)
    assert out.shape == batch.shape and np.array_equal(out[1], apply_shift(image[::-1], "jpeg", 3))
    with pytest.raises(BadInput, match="expected one of"):
        apply_shift(image, "fog", 1)
    with pytest.raises(BadInput, match="level 4"):
        apply_shift(image, "hue", 4)
    with pytest.raises(BadInput, match="uint8"):
        apply_shift(image.astype(np.float32), "hue", 1)


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A tiny custom CNN (64 px, few epochs) trained by the real training flow on synthetic data."""
    from leukedge.bundle_factory import make_small_run

    return make_small_run(tmp_path_factory.mktemp("robust_run"))


@pytest.mark.slow
def test_robustness_on_a_run_writes_json_and_plot(small_run, tmp_path, capsys):
    from leukedge.cli import main

    out = tmp_path / "rob" / "robustness.json"
    rc = main(["robustness", str(small_run), "--out", str(out), "--stain-norm", "both", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "model/none" in printed and "baseline/macenko" in printed and "hue" in printed

    report = json.loads(out.read_text())
    assert report["schema"] == 1 and report["target"]["kind"] == "run" and report["trained_with"] == "none"
    assert set(report["norms"]) == {"none", "reinhard", "macenko"}
    assert report["norms"]["reinhard"]["method"] == "reinhard" and report["norms"]["reinhard"]["target"]["mean"]
    assert report["data"]["images"] == "split-test" and report["data"]["n"] > 0
    assert set(report["shifts"]) == set(SHIFTS)
    for name, shift in report["shifts"].items():
        assert shift["values"] == list(SHIFTS[name].values)
        assert [lv["level"] for lv in shift["levels"]] == [0, *LEVELS]
        for lv in shift["levels"]:
            for who in ("model", "baseline"):
                assert set(lv[who]) == {"none", "reinhard", "macenko"}
                assert all(0.0 <= a <= 1.0 for a in lv[who].values())
    # the unshifted, unnormalised row reproduces the run's own report on the same test split
    run_report = json.loads((small_run / "report.json").read_text())
    assert report["clean"]["model"]["none"] == pytest.approx(run_report["accuracy"], abs=1e-3)
    assert report["clean"]["baseline"]["none"] == pytest.approx(run_report["baseline_accuracy"], abs=1e-3)
    assert set(report["summary"]["model"]["none"]) >= {"clean", "mean_shifted", "worst", "mean_drop"}

    png = cv2.imread(str(out.with_suffix(".png")))
    assert png is not None and png.shape[0] > 300 and png.shape[1] > 600


@pytest.mark.slow
def test_robustness_scores_every_image_of_another_folder(small_run, tmp_path, synth_data):
    from trainer.robustness import robustness_report

    report = robustness_report(small_run, data=synth_data, out=tmp_path / "r.json", stain_norm="none",
                               images="all", progress=False)
    assert report["data"]["images"] == "folder"
    assert report["data"]["n"] == 12 * len(LABELS)
    assert set(report["norms"]) == {"none"}
    assert (tmp_path / "r.png").is_file()


def test_robustness_refuses_what_it_cannot_score(tmp_path):
    from leukedge.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["robustness", str(tmp_path / "empty"), "--no-progress"]) == 2


@pytest.mark.slow
def test_robustness_on_a_bundle_runs_the_edge_backend(tmp_path, synth_data):
    from leukedge.bundle_factory import make_small_bundle
    from trainer.robustness import robustness_report

    bundle = make_small_bundle(tmp_path)
    report = robustness_report(bundle, data=synth_data, stain_norm="reinhard", progress=False)
    assert report["target"]["kind"] == "bundle"
    assert "tflite-int8" in report["target"]["runtime"] or "onnx" in report["target"]["runtime"]
    assert report["data"]["n"] == 12 * len(LABELS)
    assert set(report["norms"]) == {"none", "reinhard"} and report["baseline"] is None
    assert report["clean"]["baseline"] == {}
    assert (bundle / "robustness.json").is_file() and (bundle / "robustness.png").is_file()


# --------------------------------------------------------------------------- the shortcut experiment


@pytest.fixture(scope="module")
def shortcut_folders(tmp_path_factory):
    """Stain hue follows the class in `train` and `fresh` (synth --shortcut), not in `decorrelated`."""
    from trainer.synth.fields import generate_dataset

    root = tmp_path_factory.mktemp("shortcut")
    for name, seed, shortcut in (("train", 11, True), ("fresh", 12, True), ("decorrelated", 21, False)):
        generate_dataset(root / name, per_class=25, size=64, seed=seed, shortcut=shortcut, progress=False)
    return root


def _load(folder):
    from trainer.data import load_images, scan

    x, y, _ = load_images(scan(folder).items, 64, progress=False)
    return x, y


@pytest.mark.slow
def test_colour_baseline_collapses_without_the_shortcut_and_stain_norm_narrows_the_gap(shortcut_folders):
    """The baseline learns the class-coloured stain; Macenko normalisation takes most of that away.

    It cannot raise the decorrelated accuracy much: there the capture sessions also differ
    in red-cell tone and background, which no stain normalisation undoes.
    """
    from edge.stain import fit_stain_norm
    from trainer.baseline import color_features, fit_color_baseline
    from trainer.robustness import normalise

    x_train, y_train = _load(shortcut_folders / "train")
    x_fresh, y_fresh = _load(shortcut_folders / "fresh")
    x_decor, y_decor = _load(shortcut_folders / "decorrelated")
    acc = {}
    for method in ("none", "reinhard", "macenko"):
        norm = fit_stain_norm(method, x_train)
        clf = fit_color_baseline(normalise(x_train, norm), y_train)
        acc[method] = {
            "in": float((clf.predict(color_features(normalise(x_fresh, norm))) == y_fresh).mean()),
            "decor": float((clf.predict(color_features(normalise(x_decor, norm))) == y_decor).mean()),
        }
    gap = {m: a["in"] - a["decor"] for m, a in acc.items()}
    assert acc["none"]["in"] >= 0.7, acc  # the shortcut is easy to learn from colour alone ...
    assert gap["none"] >= 0.25, acc  # ... and does not transfer
    assert gap["macenko"] <= gap["none"] - 0.15, acc  # normalising the stain removes most of the gap
    assert acc["macenko"]["decor"] >= acc["none"]["decor"] - 0.05, acc  # at no cost on decorrelated data
    # Reinhard matches LAB means and spreads per channel but cannot undo a hue rotation:
    # it does not narrow this gap (see docs/robustness.md); assert only that it is no cure.
    assert gap["reinhard"] > gap["macenko"], acc


@pytest.mark.slow
def test_a_shortcut_trained_model_drops_on_the_decorrelated_folder(shortcut_folders, tmp_path):
    from trainer.robustness import open_target, robustness_report
    from trainer.train import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(data=str(shortcut_folders / "train"), out=str(run), arch="custom_cnn", img_size=64,
                      epochs=5, batch=16, smote=False, weights="none", seed=0, verbose=0, workers=1,
                      bn_recal_images=64, patience=5))
    x_fresh, y_fresh = _load(shortcut_folders / "fresh")
    target = open_target(run)
    in_distribution = float((target.predict(x_fresh).argmax(axis=1) == y_fresh).mean())

    report = robustness_report(run, data=shortcut_folders / "decorrelated", images="all", stain_norm="none",
                               progress=False)
    decorrelated = report["clean"]["model"]["none"]
    assert report["data"]["n"] == 100
    assert in_distribution >= decorrelated + 0.15, (in_distribution, decorrelated)
    # the colour baseline fitted on the run's training split collapses on the same folder
    assert report["clean"]["baseline"]["none"] <= 0.6, report["clean"]
