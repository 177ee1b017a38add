"""Command topics: `<prefix>/<device>/cmd/sample/start|end|id`, JSON payloads, validated.

Nothing else is executed. Retained messages are ignored by the publisher before they
get here (a stale retained "start" must not open a sample on every reconnect).
"""

from __future__ import annotations

import json
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_PAYLOAD = 1024
SAMPLE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # opaque lab id: no spaces, no free text
COMMANDS = ("sample/start", "sample/end", "sample/id")


class BadCommand(ValueError):
    """A command that is not understood or not valid: logged in one line and counted."""


class Command(NamedTuple):
    name: Literal["sample/start", "sample/end", "sample/id"]
    sample_id: str | None = None


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str | None = Field(None, pattern=SAMPLE_ID)


def parse(name: str, payload: bytes) -> Command:
    """Topic suffix after `cmd/` and the raw payload -> Command, or BadCommand saying why."""
    if name not in COMMANDS:
        raise BadCommand(f"unknown command {name[:64]!r} (known: {', '.join(COMMANDS)})")
    if len(payload) > MAX_PAYLOAD:
        raise BadCommand(f"{name}: payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    data = {}
    if payload.strip():
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadCommand(f"{name}: payload is not JSON") from None
        if not isinstance(data, dict):
            raise BadCommand(f"{name}: payload must be a JSON object")
    try:
        body = _Payload.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        raise BadCommand(f"{name}: {where}: {err['msg']}") from None
    if name == "sample/id" and body.sample_id is None:
        raise BadCommand("sample/id: sample_id is required")
    if name == "sample/end" and body.sample_id is not None:
        raise BadCommand("sample/end: takes no sample_id")
    return Command(name, body.sample_id)
