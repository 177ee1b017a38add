"""MQTT topics and payloads (docs/contracts.md): builders for the agent and pydantic models that check them.

The builders return plain dicts (cheap: they run once per field); the models are the
schema in code, used by the tests and available to consumers that want to validate
what they receive.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.ood import STAT_GROUPS

SCHEMA = 1
DEFAULT_PREFIX = "leukedge"  # the first topic level unless `mqtt.prefix` says otherwise


# The topic leaves under `<prefix>/<device>/`: the one table. The clinic bridge
# (deploy/mosquitto/bridge.conf) and the broker's ACL (deploy/mosquitto/add-device.sh) are
# tested against it.
RESULT, SAMPLE, EVENT, STATS, STATUS, INFO = "result", "sample", "event", "stats", "status", "info"
UP_QOS: dict[str, int] = {RESULT: 1, SAMPLE: 1, STATUS: 1, INFO: 1, EVENT: 1, STATS: 0}  # device -> broker
CMD = "cmd"  # commands come down on cmd/<name> (edge.commands.REGISTRY)
ALL_COMMANDS = f"{CMD}/#"


def topic(prefix: str, device_id: str, name: str) -> str:
    """`<prefix>/<device>/<name>`: the one place a topic is spelled (a leaf above, `cmd/<name>`
    from `command_leaf`, `#` for a subscriber that wants them all; `+` for any device)."""
    return f"{prefix}/{device_id}/{name}"


def discovery_topic(discovery_prefix: str, component: str, node_id: str, object_id: str) -> str:
    """Home Assistant's discovery topic `<discovery_prefix>/<component>/<node_id>/<object_id>/config`
    (edge.homeassistant; outside the `<prefix>/<device>/` tree, where HA looks)."""
    return f"{discovery_prefix}/{component}/{node_id}/{object_id}/config"


def command_leaf(name: str) -> str:
    """The leaf a command travels on, e.g. `cmd/sample/start`."""
    return f"{CMD}/{name}"


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds and a Z, e.g. 2025-01-31T12:00:00.123Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def decide(probs: np.ndarray, labels: list[str], refer_below: float) -> tuple[str, str]:
    """(top label, decision): the decision is `refer` when the top probability is below the threshold."""
    top = int(np.argmax(probs))
    return labels[top], labels[top] if float(probs[top]) >= refer_below else "refer"


def prob_map(probs: np.ndarray, labels: list[str]) -> dict[str, float]:
    return {label: round(float(p), 5) for label, p in zip(labels, probs)}


def result_payload(*, msg_id: str, seq: int, sample_id: str | None, field: int, probs: np.ndarray,
                   labels: list[str], refer_below: float, latency_ms: dict, model_sha256: str,
                   frame: dict, ood: dict | None = None) -> dict:
    """One field's result. An unfamiliar field (`ood.unfamiliar`) is `refer` with reason "unfamiliar",
    whatever its probabilities; a field below the threshold is `refer`, "not confident"."""
    label, decision = decide(probs, labels, refer_below)
    reason = None
    if ood is not None and ood["unfamiliar"]:
        decision, reason = "refer", "unfamiliar"
    elif decision == "refer":
        reason = "not confident"
    return {"schema": SCHEMA, "id": msg_id, "seq": seq, "ts": utc_now(), "sample_id": sample_id, "field": field,
            "label": label, "probs": prob_map(probs, labels), "decision": decision, "reason": reason,
            "latency_ms": {k: round(v, 3) for k, v in latency_ms.items()}, "model_sha256": model_sha256,
            "frame": frame, "ood": ood}


# --------------------------------------------------------------------------- schema

class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Msg):
    pre: float = Field(ge=0)
    invoke: float = Field(ge=0)
    total: float = Field(ge=0)


class FrameInfo(_Msg):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    w: int = Field(gt=0)
    h: int = Field(gt=0)
    focus: float


class OodInfo(_Msg):
    score: float
    threshold: float
    unfamiliar: bool
    reason: Literal[tuple(STAT_GROUPS)] | None  # which image statistics explain it, when one does


class ResultMessage(_Msg):
    schema_: Literal[1] = Field(alias="schema")
    id: str = Field(pattern=r"^.+-\d+-\d+$")
    seq: int = Field(ge=1)
    ts: datetime
    sample_id: str | None
    field: int = Field(ge=1)
    label: str
    probs: dict[str, float]
    decision: str
    reason: Literal["not confident", "unfamiliar"] | None
    latency_ms: Latency
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    frame: FrameInfo
    ood: OodInfo | None  # the unfamiliar-input guard's verdict; None when the bundle has no guard


class SampleMessage(_Msg):
    schema_: Literal[1] = Field(alias="schema")
    id: str
    ts: datetime
    sample_id: str
    opened: datetime
    n_fields: int = Field(ge=1)  # every field of the sample, familiar or not
    n_unfamiliar: int = Field(ge=0)  # of which unfamiliar (counted, never pooled into the class)
    min_fields: int = Field(ge=1)  # familiar fields a class decision needs
    refer_below: float = Field(ge=0.0, le=1.0)  # the slide cut-off this decision used
    first_seq: int
    last_seq: int
    label: str | None  # the pooled top class; None when no familiar field was pooled
    probs: dict[str, float] | None  # the familiar fields' pooled probabilities; None when there are none
    decision: str  # a label, "refer" or "insufficient"
    reason: str | None = Field(pattern=r"^(not confident|unfamiliar input: check stain, magnification, camera"
                                       r"|too few fields: \d+ of \d+ — scan more fields or refer)$")  # None: a class
    closed_by: Literal["command", "fields", "idle", "shutdown", "model_change"]
    model_sha256: str


class InfoMessage(_Msg):
    schema_: Literal[1] = Field(alias="schema")
    device: str
    agent_version: str
    boot: int
    bundle: dict
    backend: str
    model_file: str
    labels: list[str]
    thresholds: dict
    guard: dict  # {"on": true, method, threshold, ...} or {"on": false, "why_off": ...}
    source: str
    gate: str
    ts: datetime


class StatsMessage(_Msg):
    model_config = ConfigDict(extra="allow")
    schema_: Literal[1] = Field(alias="schema")
    ts: datetime
    device: str
    fps: float
    fields: int
    latency_ms: dict[str, dict[str, float]]
    outbox: dict[str, int | str | None]  # disk_error: the refused write, while the disk refuses them
    frames: dict[str, int]
    gate_rejected: dict[str, int]
    backend: str
    source: dict
    mqtt: dict


class EventMessage(_Msg):
    """`event`: a bundle installed, rejected or rolled back (edge/update.py)."""

    model_config = ConfigDict(extra="allow")
    schema_: Literal[1] = Field(alias="schema")
    type: Literal["bundle"]
    status: Literal["installed", "rejected", "rolled_back"]
    manifest_sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    release: int | None
    reason: str | None
    ts: datetime
