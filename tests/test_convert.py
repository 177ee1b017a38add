"""`leukedge convert` on real small runs: every format, hashes, agreement with Keras, the gate, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leukedge.bundle_factory import make_small_bundle, make_small_run

ALL_FORMATS = ("tflite-int8", "tflite-fp32", "tflite-fp16", "tflite-edgetpu", "onnx-fp32", "onnx-qdq")
ROW_KEYS = {"format", "path", "size_bytes", "accuracy", "per_class_recall", "agreement", "max_prob_diff",
            "latency_ms_p50", "accuracy_tta", "accuracy_box", "ece", "ece_box"}
# max |p - p_keras| allowed per format on the test split (probabilities in 0..1)
PROB_TOL = {"tflite-fp32": 1e-4, "onnx-fp32": 1e-4, "tflite-fp16": 1e-2, "tflite-int8": 0.1, "onnx-qdq": 0.1}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_edgetpu_compiler(monkeypatch):
    """These tests describe a machine without edgetpu_compiler (test_edgetpu_check covers it)."""
    monkeypatch.setattr("converter.edgetpu.compiler_path", lambda: None)


def test_every_format_written_verified_and_loadable(tmp_path):
    from edge.backends import open_backend
    from edge.manifest import load_manifest

    bundle = make_small_bundle(tmp_path, formats=ALL_FORMATS)
    manifest = load_manifest(bundle, verify=True)  # every sha256 checked
    made = {e.format for e in manifest.files} - {"selftest", "ood"}
    assert made == set(ALL_FORMATS) - {"tflite-edgetpu"}  # no compiler here: said so instead
    with np.load(bundle / manifest.file("selftest").path) as st:  # every format's outputs, for the box to rerun
        assert set(st.files) == {"images"} | {f"expected_{fmt}" for fmt in made}
    assert manifest.edgetpu["compiled"] is False and "not on PATH" in manifest.edgetpu["reason"]
    assert manifest.edgetpu["readiness"]["ok"], manifest.edgetpu["readiness"]["problems"]
    int8 = manifest.file("tflite-int8")
    assert (int8.input_quant.scale, int8.input_quant.zero_point) == (1.0, 0)  # raw camera bytes
    frame = np.full((64, 64, 3), 128, np.uint8)
    for entry in (e for e in manifest.files if e.format in made):
        backend = open_backend(bundle / entry.path, entry.format, allow_fallback=False,
                               name="litert" if entry.format.startswith("tflite") else "onnxruntime-cpu")
        probs, features = backend.infer_with_features(frame)  # every format carries the guard's features
        assert probs.shape == (4,) and abs(float(probs.sum()) - 1.0) < 0.03, entry.format
        assert features.shape == (manifest.ood.features_dim,), entry.format
    assert any("fewer than the 300" in w for w in manifest.warnings)
    assert manifest.calibration["images"] < 300
    assert set(manifest.metrics) >= made
    for fmt in made:
        m = manifest.metrics[fmt]
        assert set(m) >= {"accuracy", "per_class_recall", "per_class_precision", "n"} and m["n"] > 0
    assert 0.0 <= manifest.thresholds.refer_below <= 1.0
    assert 0.0 <= manifest.thresholds.sample_refer_below <= 1.0  # the slide's own cut-off, fitted on validation
    assert manifest.training["dataset_fingerprint"] and manifest.training["split_protocol"] == "image"
    assert manifest.versions["tensorflow"] and manifest.versions["keras"]
    assert (bundle / "layer_report.json").is_file()
    assert not list(bundle.parent.glob(".*partial*"))


def test_validation_json_and_agreement_with_keras(tmp_path):
    bundle = make_small_bundle(tmp_path, formats=ALL_FORMATS)
    validation = json.loads((bundle / "validation.json").read_text())
    assert 0.0 <= validation["float_accuracy"] <= 1.0
    rows = {r["format"]: r for r in validation["formats"]}
    assert set(rows) == set(PROB_TOL)
    for fmt, r in rows.items():
        assert ROW_KEYS <= set(r), fmt
        assert r["max_prob_diff"] <= PROB_TOL[fmt], (fmt, r["max_prob_diff"])
        assert r["latency_ms_p50"] > 0 and r["size_bytes"] == (bundle / r["path"]).stat().st_size
    for fmt in ("tflite-fp32", "onnx-fp32"):
        assert rows[fmt]["agreement"] == 1.0
    assert rows["tflite-int8"]["size_bytes"] < rows["tflite-fp32"]["size_bytes"] / 3


def test_tflite_and_onnx_match_keras(tmp_path):
    """Independent of the converter's own table: Keras against each bundle file, frame by frame.

    Float files must match on any frame (random noise included); int8 files are held to
    in-distribution frames (the test split), since their ranges are calibrated on smears.
    """
    import keras

    from edge.backends import open_backend
    from trainer.data import load_images
    from trainer.run import read_split

    run = make_small_run(tmp_path)
    bundle = make_small_bundle(tmp_path, formats=ALL_FORMATS)
    model = keras.models.load_model(run / "model.keras", compile=False)
    smears = load_images(read_split(run).splits["test"], 64, progress=False)[0]
    noise = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    for fmt, name in (("tflite-fp32", "model_fp32.tflite"), ("onnx-fp32", "model_fp32.onnx"),
                      ("tflite-fp16", "model_fp16.tflite"), ("tflite-int8", "model_int8.tflite"),
                      ("onnx-qdq", "model_qdq.onnx")):
        frames = smears if fmt in ("tflite-int8", "onnx-qdq") else np.concatenate([smears, noise])
        ref = np.asarray(model(frames, training=False))
        backend = open_backend(bundle / name, fmt, allow_fallback=False,
                               name="litert" if fmt.startswith("tflite") else "onnxruntime-cpu")
        got = np.stack([backend.infer(f) for f in frames])
        assert np.max(np.abs(got - ref)) <= PROB_TOL[fmt], fmt


def test_mobilenetv2_alpha035(tmp_path):
    """MobileNetV2 (alpha 0.35, nested base model) through the same route.

    The float file must match Keras tightly (the batch-1 float-input clone keeps every
    weight). The model here is trained from scratch for one epoch on a few dozen images,
    so its logits are unstable and int8 probabilities move more than for a trained model:
    held to top-1 agreement; the accuracy gate is what guards real runs.
    """
    from edge.manifest import load_manifest

    bundle = make_small_bundle(tmp_path, arch="mobilenetv2", per_class=8, epochs=1,
                               formats=("tflite-int8", "tflite-fp32"))
    manifest = load_manifest(bundle)
    assert manifest.arch == "mobilenetv2"
    assert (manifest.file("tflite-int8").input_quant.scale, manifest.file("tflite-int8").input_quant.zero_point) == (1.0, 0)
    ready = manifest.edgetpu["readiness"]
    assert ready["ok"], ready["problems"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= set(ready["op_versions"])
    rows = {r["format"]: r for r in json.loads((bundle / "validation.json").read_text())["formats"]}
    assert rows["tflite-fp32"]["max_prob_diff"] <= PROB_TOL["tflite-fp32"]
    assert rows["tflite-int8"]["agreement"] >= 0.75
    assert json.loads((bundle / "layer_report.json").read_text())["layers"]


def test_same_run_gives_same_int8_file(tmp_path):
    from converter.convert import convert
    from edge.manifest import load_manifest

    run = make_small_run(tmp_path)
    quiet = dict(formats="tflite-int8", max_drop=100.0, progress=False, echo=lambda _m: None)
    a = load_manifest(convert(run, tmp_path / "a", **quiet)).file("tflite-int8")
    b = load_manifest(convert(run, tmp_path / "b", **quiet)).file("tflite-int8")
    assert a.sha256 == b.sha256


def _colour_run(tmp_path: Path, black_calibration: bool) -> Path:
    """A RUN whose classes differ by colour and whose model is a linear read-out of the mean colour.

    Accurate in float by construction (fast, no training), and its int8 version depends
    directly on the calibrated range of the pooled colour: calibrating on all-black
    images (the deliberately broken set) squeezes that range to ~0, so every real image
    clips to the same features and int8 collapses to one class.
    """
    import cv2
    import keras

    from trainer.data import scan, split_items
    from trainer.split import write_split

    colours = {"Benign": (200, 60, 60), "Early": (60, 200, 60), "Pre": (60, 60, 200), "Pro": (150, 150, 150)}
    data = tmp_path / "colours"
    rng = np.random.default_rng(0)
    for label, rgb in colours.items():
        folder = data / "Original" / label
        folder.mkdir(parents=True)
        for k in range(24):
            img = np.clip(rng.normal(rgb, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{label}-{k:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    items = scan(data).items
    splits = split_items(items, "image", seed=0)
    if black_calibration:
        black = tmp_path / "black"
        black.mkdir()
        for k, item in enumerate(splits["train"]):
            cv2.imwrite(str(black / f"black-{k:03d}.png"), np.zeros((64, 64, 3), np.uint8))
        splits["train"] = [type(item)(black / f"black-{k:03d}.png", item.label) for k, item in enumerate(splits["train"])]
    run = tmp_path / "run"
    write_split(run, splits, {"data_root": data, "protocol": "image", "seed": 0})
    inp = keras.Input((64, 64, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inp))
    dense = keras.layers.Dense(4, activation="softmax")
    model = keras.Model(inp, dense(x))
    centres = np.array(list(colours.values()), np.float32) / 255  # nearest-colour classifier as a linear layer
    dense.set_weights([20 * centres.T, -10 * (centres**2).sum(1)])
    model.save(run / "model.keras")
    return run


def test_gate_passes_on_good_and_fires_on_black_calibration(tmp_path, capsys):
    from leukedge.cli import main

    good = _colour_run(tmp_path / "good", black_calibration=False)
    assert main(["convert", str(good), "--out", str(tmp_path / "ok"), "--formats", "tflite-int8"]) == 0
    # Its read-out has 3 colour features for 4 labels: too narrow to tell from the probabilities, so no guard.
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert manifest["ood"] is None and any("guard not fitted" in w for w in manifest["warnings"])
    validation = json.loads((tmp_path / "ok" / "validation.json").read_text())
    assert validation["float_accuracy"] == 1.0 and validation["formats"][0]["accuracy"] == 1.0

    bad = _colour_run(tmp_path / "bad", black_calibration=True)
    out = tmp_path / "bundle"
    rc = main(["convert", str(bad), "--out", str(out), "--formats", "tflite-int8,onnx-qdq"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "max-drop" in captured.err and "float Keras" in captured.out  # the table was printed
    assert not out.exists()
    rejected = json.loads((tmp_path / "bundle.rejected" / "validation.json").read_text())
    assert all(r["accuracy"] <= 0.5 for r in rejected["formats"])


def test_bench_reprints_and_measures(tmp_path, capsys):
    from leukedge.bundle_factory import small_dataset
    from leukedge.cli import main

    bundle = make_small_bundle(tmp_path, formats=ALL_FORMATS)
    assert main(["bench", str(bundle)]) == 0
    stored = capsys.readouterr().out
    assert "tflite-int8" in stored and "onnx-qdq" in stored and "float Keras" in stored
    out_json = tmp_path / "bench.json"
    assert main(["bench", str(bundle), "--data", str(small_dataset()), "--limit", "12", "--json", str(out_json)]) == 0
    measured = json.loads(out_json.read_text())
    assert measured["reference"] == "onnx-fp32" and measured["n"] == 12
    printed = capsys.readouterr()  # a line as each format starts, on stderr: stdout stays the table
    assert "bench: tflite-int8 on 12 images" in printed.err and "bench: onnx-qdq with the eight-pass TTA" in printed.err
    assert "unfamiliar-input guard:" in printed.out
    rows = {r["format"]: r for r in measured["formats"]}
    assert rows["tflite-fp32"]["agreement"] == 1.0 and rows["tflite-int8"]["latency_ms_p50"] > 0
    guard = measured["unfamiliar_input_guard"]  # scored as the agent scores a field
    assert guard["n"] == 12 and 0.0 <= guard["flag_rate"] <= 1.0 and guard["format"] == "tflite-int8"
    assert set(guard["reasons"]) <= {"stain", "focus", "scale", "features"}


def test_fake_quant_per_channel_matches_folded_scaling():
    """Per-channel symmetric int8 is unchanged by a per-channel scale (why QAT may ignore BN folding)."""
    from converter.qat import fake_quant_per_channel

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32)
    q = fake_quant_per_channel(w, "Conv2D")
    steps = np.max(np.abs(w), axis=(0, 1, 2)) / 127
    assert np.allclose(np.round(q / steps), q / steps, atol=1e-3)  # on the int8 grid
    assert np.max(np.abs(q - w) / steps) <= 0.5 + 1e-4  # rounding, no clipping
    gamma = rng.uniform(0.1, 3.0, 16).astype(np.float32)
    assert np.allclose(fake_quant_per_channel(w * gamma, "Conv2D"), q * gamma, rtol=1e-5, atol=1e-6)


def test_qat_runs_when_gate_misses(tmp_path, capsys):
    """An impossible gate (--max-drop -100) forces the --qat path; the rejected bundle records what ran."""
    from leukedge.cli import main

    run = make_small_run(tmp_path)
    rc = main(["convert", str(run), "--out", str(tmp_path / "b"), "--formats", "tflite-int8",
               "--max-drop", "-100", "--qat"])
    out = capsys.readouterr()
    assert rc == 2 and "qat epoch 3/3" in out.out
    manifest = json.loads((tmp_path / "b.rejected" / "manifest.json").read_text())
    assert manifest["qat"]["epochs"] == 3 and len(manifest["qat"]["history"]) == 3
    assert manifest["gate"]["passed"] is False
