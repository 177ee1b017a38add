"""`leukedge pretrain` (VICReg): views, the loss, and weights that `train --weights` loads for both architectures."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("keras")


def test_views_are_augmented_and_loss_prefers_matching_views():
    import keras

    from trainer.pretrain import two_views, vicreg_loss

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    v = two_views(x, rng)
    assert v.shape == x.shape and v.dtype == np.uint8 and not np.array_equal(v, x)
    z = rng.normal(size=(64, 16)).astype(np.float32)
    same = float(keras.ops.convert_to_numpy(vicreg_loss(None, np.concatenate([z, z], 1))))
    other = float(keras.ops.convert_to_numpy(vicreg_loss(None, np.concatenate([z, rng.normal(size=z.shape)], 1))))
    collapsed = float(keras.ops.convert_to_numpy(vicreg_loss(None, np.zeros((64, 32), np.float32))))
    assert same < other and same < collapsed  # invariance and variance terms both bite


@pytest.mark.parametrize("grey", [False, True])
def test_colour_jitter_matrix_equals_the_steps_it_folds(grey):
    """gain/offset, contrast about the mean, saturation about grey, greyscale: one affine matrix."""
    import cv2

    from trainer.pretrain import colour_matrix

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gain, offset, contrast, saturation = rng.uniform(0.6, 1.4, 3), rng.uniform(-40, 40, 3), 1.3, 1.6
    f = img.astype(np.float64) * gain + offset
    f = (f - f.mean()) * contrast + f.mean()
    g = f.mean(axis=2, keepdims=True)
    f = g + (f - g) * saturation
    if grey:
        f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
    m = colour_matrix(cv2.mean(img)[:3], (gain, offset, contrast, saturation), grey)
    folded = cv2.transform(img, m)
    assert np.abs(folded.astype(float) - np.clip(f, 0, 255)).max() <= 1.0  # uint8 rounding
    assert np.array_equal(cv2.transform(img, colour_matrix(cv2.mean(img)[:3], None, False)), img)


def test_view_pairs_are_the_same_whatever_the_thread_count():
    """Each batch's views depend on (seed, epoch, index) only, so a run repeats with any --workers."""
    from trainer.pretrain import view_pairs

    x = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    serial, threaded = view_pairs(x, 4, seed=3, workers=0), view_pairs(x, 4, seed=3, workers=3)
    assert len(serial) == 2  # full batches only
    for i in range(len(serial)):
        (a, b), target = serial[i]
        (a2, b2), _ = threaded[i]
        assert a.shape == b.shape == (4, 32, 32, 3) and target.shape == (4, 1)
        assert np.array_equal(a, a2) and np.array_equal(b, b2) and not np.array_equal(a, b)
    threaded.close()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["custom_cnn", "mobilenetv2"])
def test_saved_backbone_is_what_train_loads(arch, tmp_path):
    """The file pretrain writes loads through trainer.models.build(weights=PATH), weight for weight."""
    from trainer.models import build
    from trainer.pretrain import PretrainConfig, build_encoder

    cfg = PretrainConfig(data=".", out=str(tmp_path), arch=arch, img_size=64, alpha=0.35, width=0.25)
    encoder, saved = build_encoder(cfg)
    path = tmp_path / "backbone.weights.h5"
    saved.save_weights(path)
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    model, source = build(arch, 64, 4, alpha=0.35, weights=str(path), width=0.25)
    assert source == "file:backbone.weights.h5"
    pooled = model.get_layer("pool").output
    import keras

    features = keras.Model(model.inputs, pooled)
    np.testing.assert_allclose(features(x, training=False), encoder(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_pretrain_command_writes_weights_and_report(tmp_path):
    from leukedge.bundle_factory import small_dataset
    from leukedge.cli import main

    out = tmp_path / "pre"
    assert main(["pretrain", "--data", str(small_dataset(16, 64, 0)), "--unlabeled", str(small_dataset(8, 64, 1)),
                 "--out", str(out), "--arch", "custom_cnn", "--width", "0.25", "--img-size", "64", "--epochs", "2",
                 "--batch", "32", "--proj-dim", "32", "--quiet"]) == 0
    report = json.loads((out / "pretrain_report.json").read_text())
    assert report["method"] == "vicreg" and report["images"] == 64 + 32 and report["labelled_images"] == 64
    assert len(report["loss"]) == 2 and all(np.isfinite(report["loss"])) and report["img_per_s"] > 0
    assert report["knn_accuracy"] is not None and (out / "backbone.weights.h5").is_file()
    assert (out / "pretrain_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["pretrain", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_vicreg_pretraining_beats_random_init_with_few_labels(tmp_path):
    """The point of `leukedge pretrain`: with 10 labelled fields per class, a custom CNN fine-tuned from
    VICReg weights (pretrained on 600 unlabelled fields) beats the same CNN from random weights, on the
    fields it never saw. Tiny scale (64 px close-up fields, width 0.5), benchmarks/bench_pretrain.py's
    defaults with two seeds: about five minutes on 2 cores; 400 fields and 60 epochs were too few for a
    margin that holds on every seed."""
    from trainer.fewlabels import compare

    r = compare(tmp_path, "custom_cnn", per_class=150, labels=10, size=64, look="closeup", pretrain_epochs=80,
                epochs=20, seeds=(0, 1))
    pre = r["pretrain"]
    print(f"\n[ssl] 5-NN {pre['knn_accuracy_random_init']:.3f} -> {pre['knn_accuracy']:.3f}; random init "
          f"{r['random init']}, VICReg {r['VICReg']} (n={r['n']}), {pre['img_per_s']} img/s")
    assert pre["knn_accuracy"] > pre["knn_accuracy_random_init"] + 0.05  # the features learned cells, no labels
    assert r["gain"] >= 0.08, r


@pytest.mark.slow
def test_saved_mobilenet_backbone_has_calibrated_batch_norm(tmp_path):
    """MobileNetV2's BN momentum is 0.999: after a short pretraining its moving statistics are still
    the initial ones and every image gets the same inference-mode features, so the fine-tune (BN
    frozen in inference mode) would start from nothing. The saved backbone is recalibrated."""
    import keras

    from leukedge.bundle_factory import small_dataset
    from trainer.models import build
    from trainer.pretrain import PretrainConfig, pretrain

    data = small_dataset(16, 64, 0)
    pre = pretrain(PretrainConfig(data=str(data), out=str(tmp_path / "pre"), arch="mobilenetv2", img_size=64,
                                  alpha=0.35, epochs=1, batch=32, proj_dim=32, verbose=0))
    model, _ = build("mobilenetv2", 64, 4, alpha=0.35, weights=pre["weights"])
    from trainer.data import load_images, scan

    x = load_images(scan(data, "Original").items, 64, progress=False)[0]
    features = np.asarray(keras.Model(model.inputs, model.get_layer("pool").output).predict(x, verbose=0))
    assert (features.std(axis=0) > 1e-4).mean() > 0.5, "inference-mode features do not depend on the image"
