"""The demo's choice of the model the agent runs (gate passed and colour baseline beaten) and its
ending: the per-slide table and summary.json, built from the agent's messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.config import SampleConfig
from edge.errors import LeukedgeError
from edge.messages import result_payload
from edge.resultlog import ResultLog
from edge.samples import SamplePool
from leukedge import demoreport
from leukedge.demo import EXPECTED_OFF, choose_deployed


def report(acc: float, base: float = 0.53) -> dict:
    return {"accuracy": acc, "baseline_accuracy": base, "beats_baseline": round((acc - base) * 100, 2)}


def test_mobilenetv2_is_deployed_when_it_passed_the_gate_and_beats_the_baseline():
    bundles = {"custom_cnn": Path("c"), "mobilenetv2": Path("m")}
    assert choose_deployed(bundles, {"custom_cnn": report(0.95), "mobilenetv2": report(0.80)}) == "mobilenetv2"


def test_a_chance_level_model_with_a_small_int8_drop_is_not_deployed():
    bundles = {"custom_cnn": Path("c"), "mobilenetv2": Path("m")}  # both passed the int8 gate
    assert choose_deployed(bundles, {"custom_cnn": report(0.82), "mobilenetv2": report(0.17)}) == "custom_cnn"


def test_a_model_refused_by_the_gate_is_not_deployed_however_accurate():
    assert choose_deployed({"custom_cnn": Path("c")}, {"custom_cnn": report(0.7), "mobilenetv2": report(0.99)}) == "custom_cnn"


def test_nothing_that_beats_the_baseline_stops_the_demo_naming_every_model():
    with pytest.raises(LeukedgeError, match=r"custom_cnn 0\.500 vs baseline 0\.530.*mobilenetv2 0\.900 .*refused"):
        choose_deployed({"custom_cnn": Path("c")}, {"custom_cnn": report(0.50), "mobilenetv2": report(0.90)})


# ------------------------------------------------------------------ the demo's ending: table and summary.json
# The agent's own message builders (result_payload, SamplePool) make the payloads, so the table reads
# what an agent sends; no training, no agent process.

LABELS = ["Benign", "Early", "Pre", "Pro"]
SLIDES = [{"slide": i, "label": lab} for i, lab in enumerate(["Benign", "Early", "Pre", "Pro"])]


def one_hot(label: str, p: float) -> np.ndarray:
    probs = np.full(4, (1 - p) / 3, dtype=np.float32)
    probs[LABELS.index(label)] = p
    return probs


def agent_messages(fields: list[list[tuple[str, float]]], sample_ids: list[str | None],
                   fields_per_sample: int = 0) -> tuple[list[dict], list[dict], list[tuple[str, dict]]]:
    """(samples, results, every message in the order sent) as an agent sends them for these slides' fields ((label, p) each):
    a named sample per slide (a lab system's commands), or auto-opened ones closed every
    `fields_per_sample` fields (offline) when the id is None."""
    pool = SamplePool(SampleConfig(auto_open=True, fields_per_sample=fields_per_sample, min_fields=3),
                      "demo-scope", 1, LABELS, 0.8, "sha")
    samples, results, sent, seq = [], [], [], 0
    for slide_fields, sid in zip(fields, sample_ids):
        if sid is not None:
            pool.open(sid)
        for label, p in slide_fields:
            seq += 1
            field = pool.field_number()
            results.append(result_payload(msg_id=f"r{seq}", seq=seq, sample_id=pool.sample_id, field=field,
                                          probs=one_hot(label, p), labels=LABELS, refer_below=0.8,
                                          latency_ms={"invoke": 1.0}, model_sha256="sha", frame={}))
            sent.append(("result", results[-1]))
            closed = pool.add(seq, one_hot(label, p))
            if closed:
                samples.append(closed)
                sent.append(("sample", closed))
        if sid is not None:
            samples.append(pool.close("command"))
            sent.append(("sample", samples[-1]))
    return samples, results, sent


FIELDS = [[("Benign", 0.95)] * 5 + [("Benign", 0.5)],  # decided right, one field referred
          [("Early", 0.9)] * 3 + [("Pre", 0.9)] * 3,  # pooled below the cut-off: refer, 3 fields wrong
          [("Pro", 0.95)] * 6,  # decided wrong: Pro on a Pre slide
          [("Pro", 0.9)] * 2]  # two fields: insufficient, not wrong


def test_the_table_counts_slides_and_fields_from_a_lab_systems_samples():
    samples, results, _ = agent_messages(FIELDS, ["slide-1", "slide-2", "slide-3", "slide-4"])
    rows = demoreport.slide_rows(samples, results, SLIDES)
    assert [{k: r[k] for k in demoreport.ROW_KEYS} for r in rows] == [
        {"slide": "slide-1", "true_class": "Benign", "decision": "Benign", "n_fields": 6, "referred": 1, "wrong": 0},
        {"slide": "slide-2", "true_class": "Early", "decision": "refer", "n_fields": 6, "referred": 0, "wrong": 3},
        {"slide": "slide-3", "true_class": "Pre", "decision": "Pro", "n_fields": 6, "referred": 0, "wrong": 6},
        {"slide": "slide-4", "true_class": "Pro", "decision": "insufficient", "n_fields": 2, "referred": 0,
         "wrong": 0}]
    lines = demoreport.table(rows)
    assert lines[0].split() == ["slide", "true", "class", "decision", "fields", "referred", "wrong"]
    assert lines[3].split() == ["slide-3", "Pre", "Pro", "6", "0", "6"]
    assert lines[-1].startswith("1 of 4 slides decided correctly, 1 referred, 1 insufficient, 1 wrong")


def test_offline_auto_opened_samples_are_the_slides_in_video_order_read_from_a_results_log(tmp_path):
    samples, _, sent = agent_messages(FIELDS[:3], [None, None, None], fields_per_sample=6)
    assert [s["sample_id"] for s in samples] == ["demo-scope-1-s1", "demo-scope-1-s2", "demo-scope-1-s3"]
    log = ResultLog(tmp_path / "results.jsonl")
    for kind, payload in sent:
        log.write(kind, payload)
    log.write("skipped", {"frame": 7, "reason": "blurred"})  # other lines in the log are not fields
    log.close()
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"type":"result","torn')  # a line a crash cut short is skipped
    rows = demoreport.slide_rows(*demoreport.read_log(tmp_path / "results.jsonl"), SLIDES)
    assert [(r["slide"], r["true_class"], r["decision"], r["referred"], r["wrong"]) for r in rows] == [
        ("slide-1", "Benign", "Benign", 1, 0), ("slide-2", "Early", "refer", 0, 3), ("slide-3", "Pre", "Pro", 0, 6)]


def test_refer_and_insufficient_are_never_wrong():
    assert not demoreport.is_wrong("refer", "Pro") and not demoreport.is_wrong("insufficient", "Pro")
    assert demoreport.is_wrong("Early", "Pro") and not demoreport.is_wrong("Pro", "Pro")


def test_summary_json_has_the_documented_keys_and_says_why_each_model_is_or_is_not_on_the_box(tmp_path):
    reports = {"mobilenetv2": report(0.233, 0.567), "custom_cnn": report(0.717, 0.567)}
    bundles = {"custom_cnn": Path("bundles/custom_cnn")}  # the gate refused mobilenetv2
    deployed = choose_deployed(bundles, reports)
    models = demoreport.model_facts(reports, bundles, deployed, EXPECTED_OFF)
    samples, results, _ = agent_messages(FIELDS, ["slide-1", "slide-2", "slide-3", "slide-4"])
    rows = demoreport.slide_rows(samples, results, SLIDES)
    path = demoreport.write_summary(tmp_path / "summary.json", demoreport.summary(
        deployed, models, rows, "broker", {"total": 151.04, "agent": 20.26}))
    got = json.loads(path.read_text())
    assert tuple(got) == demoreport.SUMMARY_KEYS
    assert got["deployed"] == "custom_cnn"
    assert got["why"] == "it passed the int8 gate and beats the colour baseline (71.7 % against 56.7 %)"
    assert set(got["models"]) == {"mobilenetv2", "custom_cnn"}
    mnv2 = got["models"]["mobilenetv2"]
    assert (mnv2["test_accuracy"], mnv2["colour_baseline"], mnv2["int8_gate"], mnv2["deployed"]) == (
        0.233, 0.567, "refused", False)
    assert mnv2["status"] == "kept off the box" and "expected on a CPU: it trains from random weights" in mnv2["why"]
    assert mnv2["why"].startswith("below the colour baseline (23.3 % against 56.7 %)")
    assert all(set(demoreport.ROW_KEYS) <= set(r) for r in got["slides"]) and len(got["slides"]) == 4
    assert got["totals"]["correct"] == 1 and got["totals"]["wrong"] == 1
    assert got["seconds"] == {"total": 151.0, "agent": 20.3} and got["mode"] == "broker"


def test_a_model_above_the_baseline_that_the_gate_refused_is_said_to_be_refused_by_the_gate():
    reports = {"mobilenetv2": report(0.9, 0.567), "custom_cnn": report(0.717, 0.567)}
    models = demoreport.model_facts(reports, {"custom_cnn": Path("c")}, "custom_cnn", {})
    assert models["mobilenetv2"]["status"] == "kept off the box"
    assert models["mobilenetv2"]["why"] == "the int8 gate refused it: its int8 copy loses too much accuracy"
    assert models["custom_cnn"]["deployed"] and models["custom_cnn"]["int8_gate"] == "passed"
