"""The sample pool: one slide's fields pooled into one decision, and only on enough evidence."""

from __future__ import annotations

import numpy as np
import pytest

from edge.commands import apply, parse
from edge.config import SampleConfig, load_config
from edge.messages import SampleMessage
from edge.samples import NOTHING_TO_END, UNFAMILIAR, SamplePool

LABELS = ["Benign", "Early", "Pre", "Pro"]
SURE_EARLY = np.array([0.05, 0.9, 0.05, 0.0])


def pool(suggested: int | None = None, **kw):
    kw.setdefault("auto_open", False)
    kw.setdefault("min_fields", 1)
    return SamplePool(SampleConfig(**kw), "dev", 3, LABELS, refer_below=0.6, model_sha256="ab" * 32,
                      suggested_min_fields=suggested)


def fields(p: SamplePool, n: int, probs=SURE_EARLY, unfamiliar: bool = False, start: int = 1) -> list:
    return [p.add(seq, probs, unfamiliar) for seq in range(start, start + n)]


def test_mean_and_refer_with_auto_open():
    p = pool(auto_open=True, fields_per_sample=2)
    assert p.field_number() == 1 and p.sample_id == "dev-3-s1"
    assert p.add(1, np.array([0.9, 0.1, 0, 0])) is None
    msg = p.add(2, np.array([0.1, 0.9, 0, 0]))
    assert msg["n_fields"] == 2 and msg["closed_by"] == "fields" and msg["decision"] == "refer"
    assert msg["reason"] == "not confident" and msg["label"] == "Benign"
    assert msg["probs"]["Benign"] == pytest.approx(0.5) and (msg["first_seq"], msg["last_seq"]) == (1, 2)
    assert p.end() is None and p.notice["n"] == 1  # nothing open: a notice
    p.field_number()  # opens the next sample by itself, which is no command's notice
    assert p.sample_id == "dev-3-s2" and p.notice["n"] == 1
    p.add(3, np.array([0.1, 0.8, 0.1, 0]))
    msg = p.close("shutdown")
    assert (msg["label"], msg["decision"], msg["reason"], msg["id"]) == ("Early", "Early", None, "dev-3-s2")
    SampleMessage.model_validate(msg)


def test_too_few_fields_is_insufficient_never_a_class():
    p = pool(min_fields=5)
    p.open("SLIDE-1")
    fields(p, 2)
    msg = p.end()
    assert msg["decision"] == "insufficient" and msg["min_fields"] == 5
    assert msg["reason"] == "too few fields: 2 of 5 — scan more fields or refer"
    assert msg["label"] == "Early" and msg["probs"]["Early"] == pytest.approx(0.9)  # still reported
    SampleMessage.model_validate(msg)
    p.open("SLIDE-2")
    fields(p, 5)
    assert p.end()["decision"] == "Early"


def test_min_fields_from_config_else_manifest_else_five():
    assert pool(min_fields=None).min_fields == 5
    assert pool(min_fields=None, suggested=8).min_fields == 8
    assert pool(min_fields=3, suggested=8).min_fields == 3
    p = pool(min_fields=None)
    p.use_model(LABELS, 0.6, "cd" * 32, "mean_prob", 12)  # a bundle switch brings its own suggestion
    assert p.min_fields == 12


def test_unfamiliar_fields_are_counted_not_pooled():
    p = pool(min_fields=3)
    p.open("S")
    fields(p, 4)
    fields(p, 1, probs=np.array([0.0, 0.0, 0.0, 1.0]), unfamiliar=True, start=5)  # 1 of 5 = 0.2: not over
    msg = p.end()
    assert (msg["n_fields"], msg["n_unfamiliar"], msg["decision"], msg["reason"]) == (5, 1, "Early", None)
    assert msg["probs"]["Pro"] == 0.0 and (msg["first_seq"], msg["last_seq"]) == (1, 5)  # Pro never pooled
    p.open("T")
    fields(p, 7)
    fields(p, 3, unfamiliar=True, start=8)  # 3 of 10 > 0.2: refer, before the evidence rule
    msg = p.end()
    assert (msg["decision"], msg["reason"], msg["n_unfamiliar"]) == ("refer", UNFAMILIAR, 3)
    SampleMessage.model_validate(msg)


def test_all_unfamiliar_refers_with_no_pooled_class():
    p = pool(min_fields=3, max_unfamiliar=0.5)
    p.open("U")
    fields(p, 2, unfamiliar=True)
    msg = p.end()
    assert (msg["decision"], msg["reason"], msg["label"], msg["probs"]) == ("refer", UNFAMILIAR, None, None)
    SampleMessage.model_validate(msg)
    p = pool(min_fields=3, max_unfamiliar=1.0)  # unfamiliar allowed: then the evidence rule says why
    p.open("V")
    fields(p, 2, unfamiliar=True)
    assert p.end()["reason"] == "too few fields: 0 of 3 — scan more fields or refer"


def test_no_auto_open_after_end_fields_pooled_nowhere():
    p = pool()
    assert p.field_number() == 1 and p.current is None and p.add(1, SURE_EARLY) is None
    p.open("A")
    fields(p, 2, start=2)
    assert p.end()["n_fields"] == 2
    assert p.field_number() == 1 and p.current is None  # nothing opens by itself
    assert fields(p, 3, start=4) == [None] * 3 and p.unpooled == 4 and p.closed == 1


def test_end_with_nothing_open_is_a_noop_with_a_notice():
    p = pool()
    assert p.end() is None and p.notice["text"] == NOTHING_TO_END and p.closed == 0
    p.open("A")
    fields(p, 1)
    assert p.end()["sample_id"] == "A" and p.notice["text"] == "Ended A (1 field: Early)"
    n = p.notice["n"]
    assert p.end() is None and p.current is None and p.closed == 1  # a second End: no new sample
    assert p.notice == {"n": n + 1, "ts": p.notice["ts"], "text": NOTHING_TO_END}


def test_start_closes_the_open_one_and_says_which():
    p = pool()
    p.open("A")
    fields(p, 2)
    msg = p.open("B")
    assert msg["sample_id"] == "A" and msg["closed_by"] == "command" and p.sample_id == "B"
    assert p.notice["text"] == "Closed A (2 fields: Early); started sample B"
    assert p.end() is None and p.notice["text"] == "Ended B (no fields, no result)"  # B had no fields


def test_an_id_starts_a_sample_or_names_the_open_one():
    p = pool(idle_close_s=5)
    assert p.set_id("LAB-9") is None and p.sample_id == "LAB-9" and p.notice["text"] == "Started sample LAB-9"
    p.add(1, SURE_EARLY)
    p.set_id("LAB-10")
    assert p.sample_id == "LAB-10" and p.notice["text"] == "Open sample named LAB-10"
    assert p.tick(now=p.current.last_field_t + 1) is None
    msg = p.tick(now=p.current.last_field_t + 6)
    assert msg["closed_by"] == "idle" and msg["sample_id"] == "LAB-10" and p.current is None


def test_commands_go_through_the_pool():
    p = pool()
    assert apply(parse("sample/end", b""), p, None) is None and p.notice["text"] == NOTHING_TO_END
    apply(parse("sample/id", b'{"sample_id": "SLIDE-7"}'), p, None)
    fields(p, 1)
    assert apply(parse("sample/end", b"{}"), p, None)["sample_id"] == "SLIDE-7"
    assert parse("sample/start", b'{"sample_id": " H 2024/007 "}').sample_id == "H 2024/007"  # trimmed
    with pytest.raises(ValueError, match=r"sample_id 'SLIDE#7' is not allowed: a sample id is 1-64 characters: letters, "
                                         r"digits, spaces inside it and - _ \. / :, starting with a letter or digit"):
        parse("sample/start", b'{"sample_id": "SLIDE#7"}')


@pytest.mark.parametrize("ui, auto", [("off", True), ("127.0.0.1:0", False)])
def test_auto_open_default_follows_the_page(ui, auto):
    cfg = load_config(None, {"bundle": "/b", "ui": {"listen": ui}})
    assert cfg.sample.auto_open is auto
    assert load_config(None, {"bundle": "/b", "ui": {"listen": ui}, "sample": {"auto_open": not auto}}).sample.auto_open \
        is (not auto)


def test_slide_cutoff_is_its_own_and_defaults_to_the_field_one():
    """A pooled 0.7 is a class under a slide cut-off of 0.6 even where a field needs 0.8; a pool
    without a slide cut-off (an older bundle) uses the field's and refers it. The message says
    which cut-off decided."""
    fields_07 = np.array([0.1, 0.7, 0.1, 0.1])
    for slide_cut, decision in ((0.6, "Early"), (None, "refer")):
        p = SamplePool(SampleConfig(auto_open=True, min_fields=1), "dev", 3, LABELS, refer_below=0.8,
                       model_sha256="ab" * 32, sample_refer_below=slide_cut)
        p.field_number()
        fields(p, 3, fields_07)
        msg = p.close("command")
        assert msg["decision"] == decision and msg["refer_below"] == (0.8 if slide_cut is None else slide_cut)
        SampleMessage.model_validate(msg)
        assert p.refer_below == 0.8  # fields keep their own cut-off


def test_which_slide_cutoff_is_in_force():
    """The lab's local slide cut-off, else the bundle's, else the field cut-off in force."""
    from types import SimpleNamespace

    from edge.components import sample_threshold_in_force
    from edge.config import ThresholdsConfig
    from edge.manifest import Thresholds

    def force(local: dict, manifest: dict) -> float:
        return sample_threshold_in_force(SimpleNamespace(thresholds=ThresholdsConfig(**local)),
                                         SimpleNamespace(thresholds=Thresholds(**manifest)))

    assert force({"sample_refer_below": 0.5}, {"refer_below": 0.9, "sample_refer_below": 0.7}) == 0.5
    assert force({}, {"refer_below": 0.9, "sample_refer_below": 0.7}) == 0.7
    assert force({"refer_below": 0.85}, {"refer_below": 0.9}) == 0.85  # an older bundle: the field's in force
    assert force({}, {"refer_below": 0.9}) == 0.9

