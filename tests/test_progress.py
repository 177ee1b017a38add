"""Training progress: a line per epoch from `leukedge train`, a live bar in a terminal, and -v never silencing it."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

from leukedge.cli import build_parser, main
from tests.test_models import tinted_dataset
from trainer.progress import epoch_line, format_duration, frames, make_progress_callback, typical_epoch

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): loss \d+\.\d{4}, accuracy [\d.]+ %, val loss \d+\.\d{4}, "
                        r"val accuracy [\d.]+ %, (\d+\.\d) s, ETA (\d+ s|\d+ min \d\d s|\d+ h \d\d min)$")


def test_durations_read_as_a_person_says_them():
    assert [format_duration(s) for s in (0, 42.4, 59.6, 185, 3599, 7620)] == [
        "0 s", "42 s", "1 min 00 s", "3 min 05 s", "59 min 59 s", "2 h 07 min"]


def test_eta_leaves_out_the_compiling_first_epoch():
    assert typical_epoch([30.0, 10.0, 12.0]) == pytest.approx(11.0)
    assert typical_epoch([30.0]) == 30.0 and typical_epoch([]) == 0.0


def test_epoch_line_names_loss_val_accuracy_seconds_and_eta():
    line = epoch_line(3, 14, {"loss": 0.81234, "accuracy": 0.7123, "val_loss": 0.912, "val_accuracy": 0.66},
                      93.24, 11 * 93.2)
    assert line == ("epoch 3/14: loss 0.8123, accuracy 71.2 %, val loss 0.9120, val accuracy 66.0 %, 93.2 s, "
                    "ETA 17 min 05 s")
    assert EPOCH_LINE.match(line)
    assert epoch_line(1, 2, {"loss": 1.5}, 2.0, 2.0, "VICReg loss") == "epoch 1/2: VICReg loss 1.5000, 2.0 s, ETA 2 s"


def _fit_tiny(callback, epochs=2):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 3
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[callback])


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_live_bar_is_drawn_on_a_terminal_and_never_in_a_log():
    tty, log = Terminal(), io.StringIO()
    _fit_tiny(make_progress_callback(2, stream=tty))
    _fit_tiny(make_progress_callback(2, stream=log))
    assert re.search(r"\repoch 1/2: +\d+%\|.*\| \d/5 \[", tty.getvalue())  # the bar, over the 5 batches
    assert "epoch 2/2: loss" in tty.getvalue()
    assert "\r" not in log.getvalue()
    lines = log.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert lines[-1].endswith("ETA 0 s")
    quiet = make_progress_callback(2, stream=log, show=False)
    _fit_tiny(quiet)
    assert log.getvalue().splitlines() == lines and len(quiet.seconds) == 2  # timed, not printed


@pytest.mark.parametrize("stderr, drawn", [(Terminal(), True), (io.StringIO(), False)])
def test_image_loops_draw_a_bar_on_a_terminal_only(monkeypatch, stderr, drawn):
    monkeypatch.setattr(sys, "stderr", stderr)
    assert list(frames(range(7), "tflite-int8 x8 TTA")) == list(range(7))
    assert ("tflite-int8 x8 TTA" in stderr.getvalue() and "/7 [" in stderr.getvalue()) is drawn
    assert list(frames(range(3), "off", progress=False)) == [0, 1, 2] and "off" not in stderr.getvalue()


def _train_args(*flags):
    """Parsed `leukedge [-v] train --data d --out o ...`: -v goes before the command, the rest after."""
    before = [f for f in flags if f == "-v"]
    return build_parser("train").parse_args([*before, "train", "--data", "d", "--out", "o",
                                             *(f for f in flags if f != "-v")])


def test_global_verbose_flag_only_counts_when_given():
    from trainer.train_cli import config_from

    assert _train_args().verbose is None  # absent -v: not False, so nothing reads it as "quiet"
    assert config_from(_train_args()).verbose == 1
    assert _train_args("-v").verbose is True and config_from(_train_args("-v")).verbose == 1
    assert config_from(_train_args("--quiet")).verbose == 0
    assert config_from(_train_args("-v", "--quiet")).verbose == 0


def test_train_prints_a_line_per_epoch(tmp_path, capsys):
    data = tinted_dataset(tmp_path / "data", per_class=16, size=32)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--arch", "custom_cnn",
                 "--width", "0.25", "--img-size", "32", "--batch", "8", "--bn-recal-images", "16"]) == 0
    printed = capsys.readouterr().out.splitlines()
    matches = [EPOCH_LINE.match(line) for line in printed if line.startswith("epoch ")]
    assert len(matches) == 2 and all(matches), printed
    assert [(m[1], m[2]) for m in matches] == [("1", "2"), ("2", "2")]
    assert matches[-1][4] == "0 s" and float(matches[0][3]) > 0


def test_pretrain_prints_a_line_per_epoch(tmp_path, capsys):
    from leukedge.bundle_factory import small_dataset

    assert main(["pretrain", "--data", str(small_dataset(8, 32, 0)), "--out", str(tmp_path / "pre"),
                 "--arch", "custom_cnn", "--width", "0.25", "--img-size", "32", "--epochs", "2", "--batch", "8",
                 "--proj-dim", "16"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, lines
    assert all(re.match(rf"epoch {k}/2: VICReg loss \d+\.\d{{4}}, \d+\.\d s, ETA \d+ s$", line)
               for k, line in enumerate(lines, 1)), lines
