"""The few-label comparison on a RUN's split (benchmarks/real_fewlabels.py): which images, and that it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.manifest import LABELS
from tests.test_models import tinted_dataset
from trainer.fewlabels import link_split

ROOT = Path(__file__).resolve().parents[1]


def _split(tmp_path: Path, paths: dict[str, list[str]]) -> Path:
    data = tmp_path / "data"
    items = []
    for label, names in paths.items():
        for name in names:
            (data / label).mkdir(parents=True, exist_ok=True)
            (data / label / name).write_bytes(b"x")
            items.append({"path": f"{label}/{name}", "label": label})
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"schema": 1, "data_root": str(data), "labels": list(LABELS),
                                 "splits": {"train": items, "val": [], "test": items[:2]}}))
    return split


def test_link_split_draws_per_class_by_seed_and_never_copies(tmp_path):
    split = _split(tmp_path, {"Benign": [f"a{i}.jpg" for i in range(10)], "Pro": [f"b{i}.jpg" for i in range(10)]})
    picks = {}
    for seed in (0, 0, 1):
        dst = tmp_path / f"few{seed}-{len(picks)}"
        assert link_split(split, "train", dst, per_class=3, seed=seed) == 6
        files = sorted(dst.rglob("*.jpg"))
        assert all(f.is_symlink() for f in files) and {f.parent.name for f in files} == {"Benign", "Pro"}
        picks.setdefault(seed, []).append(sorted(f.resolve().name for f in files))
    assert picks[0][0] == picks[0][1] != picks[1][0]  # the seed decides the draw
    assert link_split(split, "train", tmp_path / "all") == 20


def test_link_split_refuses_a_path_outside_the_data_root(tmp_path):
    split = _split(tmp_path, {"Benign": ["a.jpg"]})
    meta = json.loads(split.read_text())
    meta["splits"]["train"].append({"path": "../split.json", "label": "Benign"})
    split.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="outside"):
        link_split(split, "train", tmp_path / "out")


@pytest.mark.slow
def test_real_fewlabels_benchmark_runs_on_a_run_folder(tmp_path):
    from leukedge.cli import main

    data = tinted_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--arch", "custom_cnn", "--width", "0.25",
                 "--img-size", "32", "--epochs", "1", "--quiet"]) == 0
    out = tmp_path / "fl"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/real_fewlabels.py"), str(run), "--out", str(out),
                           "--size", "32", "--labels", "4", "--seeds", "1", "--pretrain-epochs", "1", "--steps", "4"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 4 |" in done.stdout
    result = json.loads((out / "fewlabels.json").read_text())
    assert {(r["labels"], r["init"]) for r in result["rows"]} == {(4, "random init"), (4, "VICReg")}
    assert all(r["n"] == result["n_test"] for r in result["rows"])
    before = [r["baseline_accuracy"] for r in result["rows"]]
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks/real_fewlabels.py"), "--rescore-baseline", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["baseline_accuracy"] for r in json.loads((out / "fewlabels.json").read_text())["rows"]] == before
