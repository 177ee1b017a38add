"""Bad input to `leukedge convert`: one clear line on stderr, exit 2, and no bundle (not even half of one)."""

from __future__ import annotations

import json
import shutil

import pytest

from leukedge.bundle_factory import make_small_run

pytestmark = pytest.mark.slow


def _convert(capsys, run, out, *extra) -> str:
    from leukedge.cli import main

    rc = main(["convert", str(run), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    errors = [line for line in err.splitlines() if "error" in line]  # progress bars may precede it
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1] and "Traceback" not in err, err
    err = errors[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temporary folder left behind
    return err


def test_missing_model(tmp_path, capsys):
    run = make_small_run(tmp_path)
    (run / "model.keras").unlink()
    assert "model.keras: missing" in _convert(capsys, run, tmp_path / "b")


def test_corrupt_model(tmp_path, capsys):
    run = make_small_run(tmp_path)
    (run / "model.keras").write_bytes(b"this is not a keras archive")
    assert "model.keras: not a loadable Keras model" in _convert(capsys, run, tmp_path / "b")


def test_run_without_split(tmp_path, capsys):
    run = make_small_run(tmp_path)
    (run / "split.json").unlink()
    assert "split.json: missing" in _convert(capsys, run, tmp_path / "b")


def test_unknown_format(tmp_path, capsys):
    run = make_small_run(tmp_path)
    assert "unknown format 'tflite-int4'" in _convert(capsys, run, tmp_path / "b", "--formats", "tflite-int8,tflite-int4")


def test_too_few_calibration_images(tmp_path, capsys):
    run = make_small_run(tmp_path)
    split = json.loads((run / "split.json").read_text())
    split["splits"]["train"] = split["splits"]["train"][:3]
    (run / "split.json").write_text(json.dumps(split))
    assert "calibration images" in _convert(capsys, run, tmp_path / "b")


def test_no_calibration_images_asked(tmp_path, capsys):
    run = make_small_run(tmp_path)
    assert "--calib 0" in _convert(capsys, run, tmp_path / "b", "--calib", "0")


def test_label_count_mismatch(tmp_path, capsys):
    import keras

    run = make_small_run(tmp_path)
    inp = keras.Input((64, 64, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x)).save(run / "model.keras")
    assert "3 outputs but split.json lists 4 labels" in _convert(capsys, run, tmp_path / "b")


def test_existing_unrelated_folder_is_not_replaced(tmp_path, capsys):
    from leukedge.cli import main

    run = make_small_run(tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc = main(["convert", str(run), "--out", str(out)])
    assert rc == 2 and "is not a bundle" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    shutil.rmtree(out)
