"""Command topics: `<prefix>/<device>/cmd/sample/start|end|id` and `cmd/bundle/chunk|rollback`,
JSON payloads, validated.

Nothing else is executed. Retained messages are ignored by the publisher before they
get here (a stale retained "start" must not open a sample on every reconnect).
"""

from __future__ import annotations

import json
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import first_problem

MAX_PAYLOAD = 1024
SAMPLE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # opaque lab id: no spaces, no free text
COMMANDS = ("sample/start", "sample/end", "sample/id", "bundle/chunk", "bundle/rollback")


class BadCommand(ValueError):
    """A command that is not understood or not valid: logged in one line and counted."""


class Command(NamedTuple):
    name: Literal["sample/start", "sample/end", "sample/id", "bundle/chunk", "bundle/rollback"]
    sample_id: str | None = None
    body: object = None  # bundle/chunk: an edge.chunks.Chunk; bundle/rollback: {"factory": bool}


class _Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factory: bool = False


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str | None = Field(None, pattern=SAMPLE_ID)


def parse(name: str, payload: bytes, chunk_limit: int = 0) -> Command:
    """Topic suffix after `cmd/` and the raw payload -> Command, or BadCommand saying why.

    `chunk_limit` is update.max_bytes on a box that takes updates (trust keys), else 0:
    bundle commands are then refused like unknown ones."""
    if name not in COMMANDS:
        raise BadCommand(f"unknown command {name[:64]!r} (known: {', '.join(COMMANDS)})")
    if name.startswith("bundle/"):
        return _bundle(name, payload, chunk_limit)
    if len(payload) > MAX_PAYLOAD:
        raise BadCommand(f"{name}: payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    data = {}
    if payload.strip():
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # 1 kB of '[' nests too deep
            raise BadCommand(f"{name}: payload is not JSON") from None
        if not isinstance(data, dict):
            raise BadCommand(f"{name}: payload must be a JSON object")
    try:
        body = _Payload.model_validate(data)
    except ValidationError as exc:
        raise BadCommand(f"{name}: {first_problem(exc, top='payload')}") from None
    if name == "sample/id" and body.sample_id is None:
        raise BadCommand("sample/id: sample_id is required")
    if name == "sample/end" and body.sample_id is not None:
        raise BadCommand("sample/end: takes no sample_id")
    return Command(name, body.sample_id)


def _bundle(name: str, payload: bytes, chunk_limit: int) -> Command:
    if not chunk_limit:
        raise BadCommand(f"{name}: this box takes no updates (no trust.keys configured)")
    if name == "bundle/chunk":
        from edge.chunks import BadChunk, parse_chunk

        try:
            return Command(name, None, parse_chunk(payload, chunk_limit))
        except BadChunk as exc:
            raise BadCommand(f"{name}: {exc}") from None
    if len(payload) > MAX_PAYLOAD:
        raise BadCommand(f"{name}: payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    try:
        body = _Rollback.model_validate_json(payload or b"{}")
    except ValidationError as exc:
        raise BadCommand(f"{name}: {exc.errors()[0]['msg']}") from None
    return Command(name, None, {"factory": body.factory})
