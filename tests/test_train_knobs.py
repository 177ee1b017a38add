"""The training knobs measured on the real set: --augment, --label-smoothing, --ema, --lr-schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukedge.cli import main
from tests.test_models import tinted_dataset
from tests.test_train import TRAIN, _bad

keras = pytest.importorskip("keras")

from trainer.augment import STRENGTHS  # noqa: E402
from trainer.losses import SmoothedSparseCrossentropy  # noqa: E402
from trainer.pipeline import TrainBatches  # noqa: E402
from trainer.train import TrainConfig, _compile  # noqa: E402


def _batches(strength: str, x, y):
    jitter = STRENGTHS[strength]
    return TrainBatches(x, y, 16, seed=1, threads=0, augment=jitter is not None, jitter=jitter)[0][0]


def test_augment_strengths_none_mild_strong():
    rng = np.random.default_rng(0)
    x = np.full((16, 24, 24, 3), (200, 120, 160), np.uint8) + rng.integers(0, 20, (16, 24, 24, 3)).astype(np.uint8)
    y = np.zeros(16, np.int32)
    none, mild, strong = (_batches(s, x, y) for s in ("none", "mild", "strong"))
    assert sorted(map(bytes, none)) == sorted(map(bytes, x))  # no augmentation: the images as they are
    spread = [float(np.abs(b.reshape(16, -1, 3).mean(1) - x.reshape(16, -1, 3).mean(1).mean(0)).max())
              for b in (mild, strong)]
    assert spread[1] > spread[0] * 1.5, spread  # strong jitter moves the colour further than mild


def test_smoothed_loss_matches_keras_categorical_smoothing_and_plain_at_zero():
    y = np.array([0, 3, 1, 2, 2])
    p = np.random.default_rng(2).dirichlet(np.ones(4), 5).astype(np.float32)
    one_hot = np.eye(4, dtype=np.float32)[y]
    got = float(SmoothedSparseCrossentropy(0.1, 4)(y, p))
    want = float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(one_hot, p))
    assert got == pytest.approx(want, rel=1e-5)
    assert float(SmoothedSparseCrossentropy(0.0, 4)(y, p)) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(y, p)), rel=1e-5)
    assert got != pytest.approx(float(keras.losses.SparseCategoricalCrossentropy()(y, p)), rel=1e-3)


def _tiny_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(inputs))


@pytest.mark.parametrize("schedule,last_fraction", [("cosine", 0.01), ("constant", 1.0)])
def test_lr_schedule_after_warm_up(schedule, last_fraction):
    model = _tiny_model()
    _compile(model, TrainConfig(data=".", out=".", lr_schedule=schedule), 1e-2, steps=10, epochs=10, warmup_epochs=1)
    lr = model.optimizer._learning_rate  # the schedule object (learning_rate reads its current value)
    assert float(lr(10)) == pytest.approx(1e-2)  # the peak after one epoch of warm-up
    assert float(lr(100)) == pytest.approx(1e-2 * last_fraction, rel=1e-3)
    middle = 1e-2 * (0.01 + 0.99 * 0.5) if schedule == "cosine" else 1e-2  # half-way through the decay
    assert float(lr(55)) == pytest.approx(middle, rel=0.01)


def test_ema_weights_are_what_the_validation_callbacks_see():
    """SwapEMAWeights runs before the validation callback, so the epoch's score and checkpoint are the average's."""
    model = _tiny_model()
    _compile(model, TrainConfig(data=".", out=".", ema=0.9), 0.1, steps=8, epochs=2, warmup_epochs=1)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([np.array(w) for w in self.model.get_weights()])

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 4, 64)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True), Record()])
    average = [np.array(v) for v in model.optimizer._model_variables_moving_average]
    for got, want in zip(seen[-1], average):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.slow
def test_train_with_every_knob_records_them(tmp_path):
    data = tinted_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "3", *TRAIN, "--augment", "strong",
                 "--label-smoothing", "0.1", "--ema", "0.9", "--lr-schedule", "constant"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["augment"], report["label_smoothing"], report["ema"], report["lr_schedule"]) == (
        "strong", 0.1, 0.9, "constant")
    config = json.loads((out / "train_config.json").read_text())
    assert config["label_smoothing"] == 0.1 and config["augment"] == "strong"
    model = keras.saving.load_model(out / "model.keras")  # the registered loss loads with its compile state
    assert isinstance(model.loss, SmoothedSparseCrossentropy) and model.loss.smoothing == 0.1


def test_bad_knobs_exit_2(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    out = str(tmp_path / "run")
    base = ["train", "--data", str(tmp_path / "d"), "--out", out, *TRAIN]
    _bad([*base, "--label-smoothing", "0.7"], capsys, "--label-smoothing 0.7")
    _bad([*base, "--ema", "1.5"], capsys, "--ema 1.5")
