"""Pool classified fields into samples (one slide): pooled probabilities, `refer` below the threshold.

A sample opens by command (`sample/start`) or, with `auto_open`, at the first field
with none open; it closes by command, after `fields_per_sample` fields, after
`idle_close_s` without a field, or at shutdown. Each close yields one `sample` message.
"""

from __future__ import annotations

import time

import numpy as np

from edge.messages import SCHEMA, decide, prob_map, utc_now
from edge.postprocess import pool


class Sample:
    def __init__(self, sample_id: str):
        self.sample_id = sample_id
        self.opened = utc_now()
        self.probs: list[np.ndarray] = []
        self.seqs: list[int] = []
        self.unfamiliar = 0
        self.last_field_t = time.monotonic()


class SamplePool:
    def __init__(self, cfg, device_id: str, boot: int, labels: list[str], refer_below: float, model_sha256: str,
                 pooling: str = "mean_prob"):
        self.cfg = cfg
        self.use_model(labels, refer_below, model_sha256, pooling)
        self.prefix = f"{device_id}-{boot}"
        self.current: Sample | None = None
        self.next_id: str | None = None  # set by `sample/id` while none is open
        self.closed = 0

    def use_model(self, labels: list[str], refer_below: float, model_sha256: str, pooling: str = "mean_prob") -> None:
        """What the running model decides with: at start and after a bundle switch (which closes the
        open sample first, so no sample mixes two models)."""
        self.labels, self.refer_below, self.model_sha256 = labels, refer_below, model_sha256
        self.pooling = pooling  # the manifest's postprocess.pool

    def open(self, sample_id: str | None = None, now: float | None = None) -> dict | None:
        """Start a sample; returns the message of the one it closes, if any."""
        msg = self.close("command")
        n = self.closed + (1 if msg is None else 0)
        sid = sample_id or self.next_id or f"{self.prefix}-s{n}"
        self.next_id = None
        self.current = Sample(sid)
        if now is not None:
            self.current.last_field_t = now
        return msg

    def set_id(self, sample_id: str) -> None:
        if self.current is not None:
            self.current.sample_id = sample_id
        else:
            self.next_id = sample_id

    @property
    def sample_id(self) -> str | None:
        return self.current.sample_id if self.current else None

    def field_number(self) -> int:
        """The number the next field gets in the open sample (opening one if allowed)."""
        if self.current is None and self.cfg.auto_open:
            self.open()
        return len(self.current.probs) + 1 if self.current else 1

    def add(self, seq: int, probs: np.ndarray, unfamiliar: bool = False) -> dict | None:
        """Add a classified field; returns a sample message when this field closes the sample.
        An unfamiliar field (edge/ood.py) is not pooled into the sample's class decision."""
        if self.current is None:
            return None
        s = self.current
        s.unfamiliar += unfamiliar
        s.probs.append(probs)
        s.seqs.append(seq)
        s.last_field_t = time.monotonic()
        if self.cfg.fields_per_sample and len(s.probs) >= self.cfg.fields_per_sample:
            return self.close("fields")
        return None

    def tick(self, now: float | None = None) -> dict | None:
        """Close an idle sample (call from the loop)."""
        s = self.current
        if s is None or not self.cfg.idle_close_s or not s.probs:
            return None
        if (now if now is not None else time.monotonic()) - s.last_field_t >= self.cfg.idle_close_s:
            return self.close("idle")
        return None

    def close(self, why: str) -> dict | None:
        s, self.current = self.current, None
        if s is None or not s.probs:
            return None
        self.closed += 1
        mean = pool(np.stack(s.probs), self.pooling)
        label, decision = decide(mean, self.labels, self.refer_below)
        return {"schema": SCHEMA, "id": f"{self.prefix}-s{self.closed}", "ts": utc_now(), "sample_id": s.sample_id,
                "opened": s.opened, "n_fields": len(s.probs), "first_seq": s.seqs[0], "last_seq": s.seqs[-1],
                "label": label, "probs": prob_map(mean, self.labels), "decision": decision, "closed_by": why,
                "model_sha256": self.model_sha256}
