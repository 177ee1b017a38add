"""Pool classified fields into samples (one slide each) and decide the slide on enough evidence.

A sample opens by command (`sample/start`, or `sample/id` with none open: scanning a
slide's id starts its sample) or, with `auto_open` (an unattended box), at the first field
with none open. It closes by command, after `fields_per_sample` fields, after
`idle_close_s` without a field, at a model change or at shutdown; each close yields one
`sample` message. Fields seen with no sample open are counted (`unpooled`) and pooled
nowhere: after End nothing opens by itself unless `auto_open` says so.

The slide decision (`verdict`), in this order:
1. `refer`, "unfamiliar input: ...": more than `max_unfamiliar` of its fields were unfamiliar
   (edge/ood.py); those fields are counted but never pooled into a class;
2. `insufficient`, "too few fields: N of M ...": fewer than `min_fields` familiar fields;
3. `refer`, "not confident": the pooled top probability is below the slide cut-off
   `sample_refer_below` (fitted by the converter on simulated slides of validation fields;
   a pooled probability is calibrated differently from one field's, so it has its own);
4. otherwise the pooled top class.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from edge.messages import SCHEMA, decide, prob_map, utc_now
from edge.postprocess import pool

DEFAULT_MIN_FIELDS = 5
INSUFFICIENT = "insufficient"
NOT_CONFIDENT = "not confident"
UNFAMILIAR = "unfamiliar input: check stain, magnification, camera"
NOTHING_TO_END = "No sample open — nothing to end"


def too_few(n: int, needed: int) -> str:
    return f"too few fields: {n} of {needed} — scan more fields or refer"


class Verdict(NamedTuple):
    label: str | None  # the pooled top class (None when no familiar field was pooled)
    decision: str  # a label, "refer" or "insufficient"
    reason: str | None  # why it is not a class; None when it is one


class Sample:
    def __init__(self, sample_id: str):
        self.sample_id = sample_id
        self.opened = utc_now()
        self.probs: list[np.ndarray] = []  # the familiar fields' probabilities: what is pooled
        self.seqs: list[int] = []  # every field's seq, familiar or not
        self.n_unfamiliar = 0
        self.last_field_t = time.monotonic()

    @property
    def n_fields(self) -> int:
        return len(self.seqs)


class SamplePool:
    def __init__(self, cfg, device_id: str, boot: int, labels: list[str], refer_below: float, model_sha256: str,
                 pooling: str = "mean_prob", suggested_min_fields: int | None = None,
                 sample_refer_below: float | None = None):
        self.cfg = cfg
        self.use_model(labels, refer_below, model_sha256, pooling, suggested_min_fields, sample_refer_below)
        self.prefix = f"{device_id}-{boot}"
        self.current: Sample | None = None
        self.closed = 0
        self.unpooled = 0  # fields seen with no sample open
        self.notice: dict | None = None  # what the last sample command did, for the page: {"n", "ts", "text"}

    def use_model(self, labels: list[str], refer_below: float, model_sha256: str, pooling: str = "mean_prob",
                  suggested_min_fields: int | None = None, sample_refer_below: float | None = None) -> None:
        """What the running model decides with: at start and after a bundle switch (which closes the
        open sample first, so no sample mixes two models). `refer_below` is a field's cut-off,
        `sample_refer_below` the slide's (None: the field's, as bundles without one had it).
        `min_fields`: the config's, else the manifest's suggestion (`thresholds.min_fields`), else
        DEFAULT_MIN_FIELDS."""
        self.labels, self.refer_below, self.model_sha256 = labels, refer_below, model_sha256
        self.sample_refer_below = refer_below if sample_refer_below is None else sample_refer_below
        self.pooling = pooling  # the manifest's postprocess.pool
        self.min_fields = self.cfg.min_fields or suggested_min_fields or DEFAULT_MIN_FIELDS

    # ------------------------------------------------------------------ commands

    def open(self, sample_id: str | None = None, now: float | None = None) -> dict | None:
        """Start a sample; returns the message of the one it closes, if any."""
        before = self.current
        msg = self.close("command")
        n = self.closed + (1 if msg is None else 0)
        self.current = Sample(sample_id or f"{self.prefix}-s{n}")
        if now is not None:
            self.current.last_field_t = now
        started = f"Started sample {self.current.sample_id}"
        self._say(f"Closed {_closed_words(msg, before)}; {started[0].lower()}{started[1:]}" if before else started)
        return msg

    def end(self) -> dict | None:
        """End the open sample; with none open (a second End) nothing happens but a notice."""
        if self.current is None:
            self._say(NOTHING_TO_END)
            return None
        before = self.current
        msg = self.close("command")
        self._say(f"Ended {_closed_words(msg, before)}")
        return msg

    def set_id(self, sample_id: str) -> dict | None:
        """Name the open sample, or start one with this id when none is open (a scanned slide label)."""
        if self.current is None:
            return self.open(sample_id)
        self.current.sample_id = sample_id
        self._say(f"Open sample named {sample_id}")
        return None

    def _say(self, text: str) -> None:
        self.notice = {"n": (self.notice or {"n": 0})["n"] + 1, "ts": utc_now(), "text": text}

    # ------------------------------------------------------------------ fields

    @property
    def sample_id(self) -> str | None:
        return self.current.sample_id if self.current else None

    def field_number(self) -> int:
        """The number the next field gets in the open sample (opening one if `auto_open`)."""
        if self.current is None and self.cfg.auto_open:
            notice = self.notice
            self.open()
            self.notice = notice  # opened by a field, not by a command: the page keeps the last command's notice
        return self.current.n_fields + 1 if self.current else 1

    def add(self, seq: int, probs: np.ndarray, unfamiliar: bool = False) -> dict | None:
        """Add a classified field; returns a sample message when this field closes the sample.
        An unfamiliar field counts in the sample but is not pooled into its class decision."""
        s = self.current
        if s is None:
            self.unpooled += 1
            return None
        s.seqs.append(seq)
        if unfamiliar:
            s.n_unfamiliar += 1
        else:
            s.probs.append(probs)
        s.last_field_t = time.monotonic()
        if self.cfg.fields_per_sample and s.n_fields >= self.cfg.fields_per_sample:
            return self.close("fields")
        return None

    def tick(self, now: float | None = None) -> dict | None:
        """Close an idle sample (call from the loop)."""
        s = self.current
        if s is None or not self.cfg.idle_close_s or not s.n_fields:
            return None
        if (now if now is not None else time.monotonic()) - s.last_field_t >= self.cfg.idle_close_s:
            return self.close("idle")
        return None

    # ------------------------------------------------------------------ the decision

    def verdict(self, n_fields: int, n_unfamiliar: int, mean: np.ndarray | None) -> Verdict:
        """The slide decision on `n_fields` fields, `n_unfamiliar` of them unfamiliar, and the
        familiar ones' pooled probabilities `mean` (None when there are none)."""
        label, confident = decide(mean, self.labels, self.sample_refer_below) if mean is not None else (None, "refer")
        accepted = n_fields - n_unfamiliar
        if n_fields and n_unfamiliar / n_fields > self.cfg.max_unfamiliar:
            return Verdict(label, "refer", UNFAMILIAR)
        if accepted < self.min_fields:
            return Verdict(label, INSUFFICIENT, too_few(accepted, self.min_fields))
        if confident == "refer":
            return Verdict(label, "refer", NOT_CONFIDENT)
        return Verdict(label, confident, None)

    def close(self, why: str) -> dict | None:
        s, self.current = self.current, None
        if s is None or not s.n_fields:
            return None
        self.closed += 1
        mean = pool(np.stack(s.probs), self.pooling) if s.probs else None
        v = self.verdict(s.n_fields, s.n_unfamiliar, mean)
        return {"schema": SCHEMA, "id": f"{self.prefix}-s{self.closed}", "ts": utc_now(), "sample_id": s.sample_id,
                "opened": s.opened, "n_fields": s.n_fields, "n_unfamiliar": s.n_unfamiliar,
                "min_fields": self.min_fields, "refer_below": self.sample_refer_below, "first_seq": s.seqs[0], "last_seq": s.seqs[-1], "label": v.label,
                "probs": None if mean is None else prob_map(mean, self.labels), "decision": v.decision,
                "reason": v.reason, "closed_by": why, "model_sha256": self.model_sha256}


def _closed_words(msg: dict | None, sample: Sample) -> str:
    """'SLIDE-0042 (8 fields: refer)' or 'SLIDE-0042 (no fields, no result)' for a notice."""
    if msg is None:
        return f"{sample.sample_id} (no fields, no result)"
    return f"{msg['sample_id']} ({msg['n_fields']} field{'s' if msg['n_fields'] != 1 else ''}: {msg['decision']})"
