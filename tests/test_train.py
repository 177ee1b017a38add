"""`leukedge train` / `leukedge evaluate` end to end, bad input, and the JAX backend."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leukedge.cli import main
from tests.test_models import assert_tracks, tinted_dataset

pytest.importorskip("keras")

DESIGN_KEYS = {"accuracy", "labels", "per_class", "macro_f1", "confusion_matrix", "roc_auc_ovr", "ece", "split",
               "smote", "weights", "arch", "img_size", "epochs", "versions", "wall_s", "train_img_per_s",
               "baseline_accuracy", "beats_baseline"}
TRAIN = ["--arch", "custom_cnn", "--width", "0.25", "--img-size", "32", "--batch", "8", "--lr", "3e-3", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tinted_dataset(tmp_path_factory.mktemp("tinted") / "data")


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cnn"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "4", *TRAIN]) == 0
    return out


@pytest.mark.slow
def test_train_writes_a_complete_run(run, data, capsys):
    for name in ("model.keras", "split.json", "history.json", "report.json", "train_config.json",
                 "training_curves.png", "confusion_matrix.png", "best.weights.h5"):
        assert (run / name).is_file(), name
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"
    report = json.loads((run / "report.json").read_text())
    assert DESIGN_KEYS <= set(report)
    assert report["labels"] == ["Benign", "Early", "Pre", "Pro"]
    assert 0.0 <= report["accuracy"] <= 1.0 and len(report["confusion_matrix"]) == 4
    assert sum(map(sum, report["confusion_matrix"])) == report["n"] == sum(report["split"]["counts"]["test"].values())
    assert report["split"]["protocol"] == "image" and report["split"]["duplicates_removed"] == 0
    assert report["smote"] is True and report["weights"] == "none" and report["arch"] == "custom_cnn"
    assert report["img_size"] == 32 and report["epochs"] == 4 and report["train_img_per_s"] > 0
    assert report["beats_baseline"] == pytest.approx((report["accuracy"] - report["baseline_accuracy"]) * 100, abs=0.01)
    assert report["versions"]["keras"] and report["versions"]["keras_backend"]
    pp = report["postprocess"]  # fitted on validation: SMOTE -> uniform model prior
    assert pp["model_prior"] == [0.25] * 4 and pp["params"]["temperature"] > 0
    assert pp["params"]["tta"] == ("dihedral" if pp["val_tta_gain"] > 0 else "none")
    for key in ("accuracy_tta", "accuracy_box", "ece_box"):
        assert report[key] == pp[key] and 0.0 <= report[key] <= 1.0
    assert pp["samples"]["chosen"] in ("mean_prob", "mean_log_prob") and (run / "reliability.png").is_file()
    config = json.loads((run / "train_config.json").read_text())
    assert config["img_size"] == 32 and config["arch"] == "custom_cnn" and config["seed"] == 0
    assert config["labels"] == report["labels"] and config["stain_norm"]["method"] == "none"
    history = json.loads((run / "history.json").read_text())
    assert len(history["val_accuracy"]) == len(history["accuracy"]) == 4
    assert_tracks(history, report)  # the batch-norm trap, custom CNN
    split = json.loads((run / "split.json").read_text())
    train_files = {row["path"] for row in split["splits"]["train"]}
    assert not train_files & {row["path"] for row in split["splits"]["test"]}


@pytest.mark.slow
def test_evaluate_scores_any_folder(run, data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert DESIGN_KEYS <= set(report)
    assert report["n"] == 4 * 48  # every image in the folder
    assert report["split"]["protocol"] == "folder" and report["split"]["test_source"] == str(data.absolute())
    assert report["baseline_accuracy"] is not None and report["arch"] == "custom_cnn"
    assert out.with_suffix(".png").is_file()
    trained = json.loads((run / "report.json").read_text())["postprocess"]
    assert report["postprocess"]["params"] == trained["params"]  # the run's fitted rule, not a refit
    assert {"accuracy_tta", "accuracy_box", "ece_box"} <= set(report) and "samples" in report["postprocess"]
    # The data set moved: the baseline needs the training files, --train-data says where.
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    gone = tmp_path / "gone"
    data.rename(gone)
    try:
        assert main(["evaluate", str(run), "--data", str(moved), "--out", str(out), "--quiet"]) == 2
        assert "--train-data" in capsys.readouterr().err
        assert main(["evaluate", str(run), "--data", str(moved), "--train-data", str(moved), "--out", str(out),
                     "--quiet"]) == 0
        assert json.loads(out.read_text())["baseline_accuracy"] == report["baseline_accuracy"]
    finally:
        gone.rename(data)


def _bad(args, capsys, expect):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expect in err, err


def test_bad_inputs_exit_2(tmp_path, data, capsys):
    out = str(tmp_path / "run")
    _bad(["train", "--data", str(tmp_path / "nope"), "--out", out, *TRAIN], capsys, "nope")
    (tmp_path / "empty").mkdir()
    _bad(["train", "--data", str(tmp_path / "empty"), "--out", out, *TRAIN], capsys, "empty")
    _bad(["train", "--data", str(data), "--out", out, "--arch", "resnet50"], capsys, "resnet50")
    _bad(["train", "--data", str(data), "--out", out, "--weights", str(tmp_path / "w.h5"), "--arch", "mobilenetv2"],
         capsys, "w.h5")
    (tmp_path / "run_without_model").mkdir()
    _bad(["evaluate", str(tmp_path / "run_without_model"), "--data", str(data)], capsys, "model.keras")


NO_TF = """
import importlib.abc, sys
class NoTF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("tensorflow is blocked: a JAX-only box")
sys.meta_path.insert(0, NoTF())
from leukedge.cli import main
rc = main(sys.argv[1:])
assert "tensorflow" not in sys.modules, "the JAX path imported tensorflow"
sys.exit(rc)
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install jax)")
def test_jax_backend_trains_a_model_tensorflow_loads(data, tmp_path):
    """Train under KERAS_BACKEND=jax with TensorFlow unimportable; load model.keras under TensorFlow."""
    out = tmp_path / "jax_run"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", NO_TF, "train", "--data", str(data), "--out", str(out),
                           "--epochs", "1", "--no-smote", *TRAIN], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["versions"]["keras_backend"] == "jax" and "tensorflow" not in report["versions"]
    import keras

    from trainer.data import load_images
    from trainer.run import read_split

    assert keras.backend.backend() == "tensorflow"
    model = keras.saving.load_model(out / "model.keras")
    x, y, _ = load_images(read_split(out).splits["test"], 32, progress=False)
    acc = float((np.asarray(model.predict(x, verbose=0)).argmax(1) == y).mean())
    assert acc == pytest.approx(report["accuracy"], abs=1e-9)
