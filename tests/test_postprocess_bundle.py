"""Post-processing on real bundles: the converter fits it, bench reports it, the agent applies it.

One tiny SMOTE run on a synthetic set where Benign is rare (so the model's prior is not
the data's), converted with the real converter; the parity test holds the agent's
probabilities equal to the converter/bench path (`run_format` + `postprocess`).
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from edge.manifest import load_manifest, write_manifest
from edge.postprocess import PostProcess, postprocess
from leukedge.bundle_factory import small_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """(data folder, bundle) from a SMOTE run on 8 Benign vs 24 of each other class."""
    from converter.convert import convert
    from trainer.train import TrainConfig, train

    root = tmp_path_factory.mktemp("imb")
    data = root / "data"
    shutil.copytree(small_dataset(per_class=24, size=64, seed=0), data)
    for f in sorted((data / "Original" / "Benign").iterdir())[8:]:
        f.unlink()
    run = root / "run"
    train(TrainConfig(data=str(data), out=str(run), arch="custom_cnn", epochs=2, img_size=64, batch=16,
                      weights="none", smote=True, seed=0, verbose=0, workers=1, bn_recal_images=64, patience=2))
    bundle = root / "bundle"
    convert(run, bundle, formats=("tflite-int8",), calib=32, max_drop=100.0, progress=False,
            echo=lambda _m: None)
    return data, bundle


def test_converter_fits_postprocess_on_validation(imbalanced):
    _, bundle = imbalanced
    manifest = load_manifest(bundle)
    validation = json.loads((bundle / "validation.json").read_text())
    pp = validation["postprocess"]
    assert manifest.postprocess.model_dump() == pp["params"]
    assert pp["fitted_on"] == "val" and pp["source_format"] == "tflite-int8"
    # SMOTE trained on equal classes; Benign is rare in the data, so its log-probability is lowered.
    assert pp["model_prior"] == [0.25] * 4 and pp["expected_prior"][0] < 0.25
    shift = manifest.postprocess.log_prior_shift
    assert shift is not None and shift[0] == max(shift) > 0
    assert manifest.postprocess.tta == ("dihedral" if pp["val"]["tta_chosen"] else "none")
    if pp["val"]["with_tta"]["accuracy_box"] <= pp["val"]["without_tta"]["accuracy_box"]:
        assert manifest.postprocess.tta == "none"  # on only with a validation gain
    for r in validation["formats"]:
        assert {"accuracy", "accuracy_tta", "accuracy_box", "ece", "ece_box"} <= set(r), r["format"]
        assert 0 <= r["ece_box"] <= 1 and 0 <= r["accuracy_box"] <= 1
    assert set(pp["samples_test"]) >= {"mean_prob", "mean_log_prob", "chosen"}
    assert manifest.postprocess.pool == pp["samples_val"]["chosen"]
    for png in ("reliability.png", "risk_coverage.png"):
        assert cv2.imread(str(bundle / png)) is not None
        assert png in {r["path"] for r in manifest.reports}
    assert manifest.thresholds.on == "post-processed probabilities"
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "MODEL_CARD.md" in {r["path"] for r in manifest.reports}
    for text in ("screening aid", "colour-statistics baseline", "Split protocol `image`", "refer",
                 f"temperature {manifest.postprocess.temperature:.3f}", "Limits", "sample-level accuracy"):
        assert text in card, text
    assert f"{100 * validation['formats'][0]['accuracy_box']:.2f} %" in card


def test_bench_reports_box_accuracy_and_ece(imbalanced, tmp_path):
    from leukedge.cli import main

    data, bundle = imbalanced
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle), "--data", str(data), "--limit", "16", "--json", str(out)]) == 0
    measured = json.loads(out.read_text())
    rows = {r["format"]: r for r in measured["formats"]}
    assert measured["postprocess"]["params"] == load_manifest(bundle).postprocess.model_dump()
    for r in rows.values():
        assert {"accuracy", "accuracy_tta", "accuracy_box", "ece_box"} <= set(r)
    stored = {r["format"]: r for r in json.loads((bundle / "validation.json").read_text())["formats"]}
    assert set(rows) == set(stored)


def test_agent_parity_with_validation_path_and_tta(imbalanced, tmp_path):
    """With tta on, the agent invokes eight times per field and its probabilities equal
    postprocess(run_format(tta=True)), the converter's and bench's path, on the same images."""
    from converter.validate import run_format
    from edge.agent import Agent
    from edge.config import load_config
    from edge.sources import make_source
    from trainer.data import Item, load_images

    data, src = imbalanced
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    m = load_manifest(bundle)
    m.postprocess = PostProcess(tta="dihedral", temperature=1.7, log_prior_shift=[0.4, -0.2, -0.1, -0.1],
                                pool="mean_log_prob")
    write_manifest(bundle, m)
    frames = tmp_path / "frames"
    frames.mkdir()
    paths = sorted((data / "Original" / "Pre").glob("*.jpg"))[:3] + sorted((data / "Original" / "Benign").glob("*.jpg"))[:2]
    for i, p in enumerate(paths):
        shutil.copy(p, frames / f"f{i}.jpg")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"device_id: box1\nbundle: {bundle}\nsource: {{uri: '{frames}'}}\ngate: {{mode: continuous}}\n"
                   f"mqtt: {{url: null}}\noutbox: {{path: '{tmp_path / 'ob.sqlite'}'}}\nresult_log: {{path: null}}\n"
                   "backend: {name: litert}\nsample: {fields_per_sample: 5, auto_open: true}\n")
    agent = Agent(load_config(cfg))
    agent.start()
    assert agent.info()["bundle"]["tta"] == "dihedral"
    calls, infer = [], agent.parts.backend.infer_with_features
    agent.parts.backend.infer_with_features = lambda x: calls.append(1) or infer(x)
    results, samples = [], []
    agent.emit = lambda kind, payload: payload and (results if kind == "result" else samples).append(payload)
    source = make_source(str(frames)).open()
    while (frame := source.read()) is not None:
        agent.process(frame)
    agent.shutdown()
    assert len(calls) == 8 * len(paths) and len(results) == len(paths)
    x, _, _ = load_images([Item(frames / f"f{i}.jpg", "Pre") for i in range(len(paths))], 64, progress=False)
    passes, _ = run_format(bundle / m.file("tflite-int8").path, "tflite-int8", x, tta=True)
    expected = postprocess(passes, m.postprocess)
    got = np.array([[r["probs"][lab] for lab in m.labels] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)  # messages round to 5 decimals
    from edge.postprocess import pool

    sample = next(s for s in samples if s.get("n_fields") == len(paths))
    np.testing.assert_allclose([sample["probs"][lab] for lab in m.labels], pool(expected, "mean_log_prob"), atol=1e-5)
