"""The demo's lab system: one sample per slide, opened and closed over MQTT with `cmd/sample/*`.

Real parts: Mosquitto, the agent (in this process, paced at the video's frame rate),
a real int8 bundle and a synthetic slide video.
"""

from __future__ import annotations

import time

from edge.agent import Agent
from edge.config import load_config
from edge.messages import SampleMessage
from leukedge.bundle_factory import make_small_bundle
from leukedge.demoreport import slide_rows, totals
from leukedge.lab import LabSystem, field_reason, sample_words, slide_id

SLIDES = [{"slide": 0, "label": "Pre", "fields": [0, 2], "frames": [0, 40]},
          {"slide": 1, "label": "Benign", "fields": [2, 4], "frames": [40, 95]},
          {"slide": 2, "label": "Pro", "fields": [4, 5], "frames": [95, 130]}]


class _Recorder(LabSystem):
    """The lab system's decisions without a broker."""

    def __init__(self, slides):
        self.slides, self.sent, self.current = slides, [], -1

    def _command(self, name, sample_id=None):
        self.sent.append((name, sample_id))


def test_commands_follow_the_slide_boundaries():
    lab = _Recorder(SLIDES)
    assert lab.sent == []  # nothing before the agent is online
    lab.on_frames(0)
    assert lab.sent == [("id", "slide-1")]
    lab.on_frames(39)
    assert len(lab.sent) == 1
    lab.on_frames(41)
    assert lab.sent[1:] == [("end", None), ("start", "slide-2")]
    lab.on_frames(200)  # a late stats message skips no slide, and the last slide stays open
    assert lab.sent[3:] == [("end", None), ("start", "slide-3")]
    lab.on_frames(300)
    assert len(lab.sent) == 5 and lab.truth("slide-2") == "Benign" and lab.truth("other") == "unknown"


def test_agent_pools_each_slide_into_its_own_sample(tmp_path, broker):
    from trainer.synth.video import write_video

    meta = write_video(tmp_path / "v.avi", n_fields=4, size=160, seed=1, fps=10, per_slide=2)
    bundle = make_small_bundle(tmp_path / "bundle")
    lab = LabSystem(broker.port, "leukedge", "box1", meta["slides"], verbose=False)
    cfg = load_config(None, {
        "bundle": str(bundle), "device_id": "box1", "drain_timeout_s": 10,
        "source": {"uri": str(tmp_path / "v.avi"), "fps": meta["fps"]},
        "mqtt": {"url": broker.url, "stats_interval_s": 0.1}, "outbox": {"path": str(tmp_path / "o.sqlite")},
        "result_log": {"path": str(tmp_path / "results.jsonl")}})
    try:
        assert Agent(cfg).run() == 0
        for _ in range(50):
            if len(lab.samples) == 2:
                break
            time.sleep(0.1)
    finally:
        lab.stop()
    assert lab.sent == [("id", "slide-1"), ("end", None), ("start", "slide-2")]
    assert [s["sample_id"] for s in lab.samples] == [slide_id(s) for s in meta["slides"]]
    assert [s["n_fields"] for s in lab.samples] == [2, 2]
    assert [s["closed_by"] for s in lab.samples] == ["command", "shutdown"]
    assert {r["sample_id"] for r in lab.results.values()} == {"slide-1", "slide-2"} and len(lab.results) == 4
    # two fields a slide, five needed: over MQTT, the new keys say why neither slide gets a class
    for s in lab.samples:
        SampleMessage.model_validate(s)
        assert (s["decision"], s["min_fields"], s["n_unfamiliar"]) == ("insufficient", 5, 0)
        assert s["reason"] == "too few fields: 2 of 5 — scan more fields or refer" and len(s["probs"]) == 4
    assert "4 fields classified" in lab.summary(1.0)[0] and "2 samples closed for 2 slides" in lab.summary(1.0)[0]
    rows = slide_rows(lab.samples, list(lab.results.values()), meta["slides"])  # the demo's per-slide table
    assert [(r["slide"], r["decision"], r["n_fields"]) for r in rows] == [("slide-1", "insufficient", 2),
                                                                        ("slide-2", "insufficient", 2)]
    assert totals(rows)["insufficient"] == 2 and totals(rows)["wrong"] == 0


def test_sample_decisions_in_words():
    base = {"label": "Pre", "n_unfamiliar": 0, "min_fields": 5}
    assert sample_words({**base, "decision": "Pre", "reason": None}) == "Pre"
    assert sample_words({**base, "decision": "refer", "reason": "not confident"}) == "refer (not confident; most likely Pre)"
    assert sample_words({**base, "label": None, "decision": "refer", "reason": "unfamiliar input: check stain, "
                         "magnification, camera"}) == "refer (unfamiliar input: check stain, magnification, camera)"
    assert sample_words({**base, "decision": "insufficient", "reason": "too few fields: 2 of 5 — scan more fields "
                         "or refer"}).startswith("insufficient evidence (too few fields: 2 of 5")


def test_field_reasons_in_words():
    assert field_reason({"decision": "Pre", "reason": None, "ood": None}) == ""
    assert field_reason({"decision": "refer", "reason": "not confident", "ood": None}) == " (not confident)"
    assert field_reason({"decision": "refer", "reason": "unfamiliar",
                         "ood": {"unfamiliar": True, "reason": "stain"}}) == " (unfamiliar input: stain)"
    assert field_reason({"decision": "refer", "reason": "unfamiliar",
                         "ood": {"unfamiliar": True, "reason": None}}) == " (unfamiliar input)"
    assert field_reason({"decision": "Pre"}) == ""  # an older agent's result
