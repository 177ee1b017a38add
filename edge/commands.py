"""Command topics: `<prefix>/<device>/cmd/sample/start|end|id` and `cmd/bundle/chunk|rollback`,
JSON payloads, validated.

`sample/start` closes an open sample (closed_by `command`) and opens one; `sample/end` with
none open does nothing (the page says so); `sample/id` names the open sample or, with none
open, starts one with that id (a scanned slide label).

Nothing else is executed. Retained messages are ignored by the publisher before they
get here (a stale retained "start" must not open a sample on every reconnect).
`REGISTRY` is the one list of commands: each name with how its payload is read and
what applying it does; the agent, MQTT and the station page all go through it.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from edge.chunks import BadChunk, parse_chunk
from edge.errors import json_object, validated

MAX_PAYLOAD = 1024
# The one sample id rule (the station page is served it too): a lab's accession number as
# printed, e.g. "H 2024/00417" or "BM-12:3". Read after trimming the ends; written so that
# Python's re and JavaScript's RegExp read it alike. It never becomes a topic or a file name.
SAMPLE_ID = r"^[A-Za-z0-9](?:[A-Za-z0-9._:/ -]{0,62}[A-Za-z0-9._:/-])?$"
SAMPLE_ID_RULE = ("a sample id is 1-64 characters: letters, digits, spaces inside it and - _ . / :, "
                  "starting with a letter or digit")


def valid_sample_id(sid: str) -> bool:
    """The rule on an already trimmed id (fullmatch: Python's `$` would let a final newline through)."""
    return re.fullmatch(SAMPLE_ID, sid) is not None


class BadCommand(ValueError):
    """A command that is not understood or not valid: logged in one line and counted."""


class Command(NamedTuple):
    name: str  # a key of REGISTRY
    sample_id: str | None = None
    body: object = None  # bundle/chunk: an edge.chunks.Chunk; bundle/rollback: {"factory": bool}


class _Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factory: bool = False


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str | None = Field(None, pattern=SAMPLE_ID)


def _small_object(name: str, payload: bytes) -> dict:
    """A command's payload as a JSON object (empty = {}), at most MAX_PAYLOAD bytes."""
    if len(payload) > MAX_PAYLOAD:
        raise BadCommand(f"{name}: payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return json_object(payload, f"{name} payload", BadCommand) if payload.strip() else {}


def _sample(name: str, payload: bytes, chunk_limit: int) -> Command:
    obj = _small_object(name, payload)
    sid = obj.get("sample_id")
    if isinstance(sid, str):
        sid = obj["sample_id"] = sid.strip()  # a scanner's trailing space or newline is no part of the id
        if not valid_sample_id(sid):
            raise BadCommand(f"{name}: sample_id {sid[:64]!r} is not allowed: {SAMPLE_ID_RULE}")
    body = validated(_Payload, obj, f"{name} payload", BadCommand)
    if name == "sample/id" and body.sample_id is None:
        raise BadCommand("sample/id: sample_id is required")
    if name == "sample/end" and body.sample_id is not None:
        raise BadCommand("sample/end: takes no sample_id")
    return Command(name, body.sample_id)


def _needs_updates(name: str, chunk_limit: int) -> None:
    if not chunk_limit:
        raise BadCommand(f"{name}: this box takes no updates (no trust.keys configured)")


def _chunk(name: str, payload: bytes, chunk_limit: int) -> Command:
    _needs_updates(name, chunk_limit)
    try:
        return Command(name, None, parse_chunk(payload, chunk_limit))
    except BadChunk as exc:
        raise BadCommand(f"{name}: {exc}") from None


def _rollback(name: str, payload: bytes, chunk_limit: int) -> Command:
    _needs_updates(name, chunk_limit)
    body = validated(_Rollback, _small_object(name, payload), f"{name} payload", BadCommand)
    return Command(name, None, {"factory": body.factory})


class Kind(NamedTuple):
    """One command: how its payload is read, and what it does to the sample pool or the updater
    (the return value is a `sample` message to send, when the command closed one)."""

    parse: Callable[[str, bytes, int], Command]
    apply: Callable[[Command, object, object], dict | None]  # (command, SamplePool, Updater or None)


def _chunk_to(updater, cmd: Command) -> None:
    if updater:
        updater.submit_chunk(cmd.body)


def _rollback_to(updater, cmd: Command) -> None:
    if updater:
        updater.submit_rollback(cmd.body["factory"])


REGISTRY: dict[str, Kind] = {
    "sample/start": Kind(_sample, lambda cmd, samples, updater: samples.open(cmd.sample_id)),
    "sample/end": Kind(_sample, lambda cmd, samples, updater: samples.end()),
    "sample/id": Kind(_sample, lambda cmd, samples, updater: samples.set_id(cmd.sample_id)),
    "bundle/chunk": Kind(_chunk, lambda cmd, samples, updater: _chunk_to(updater, cmd)),
    "bundle/rollback": Kind(_rollback, lambda cmd, samples, updater: _rollback_to(updater, cmd)),
}
COMMANDS: tuple[str, ...] = tuple(REGISTRY)


def parse(name: str, payload: bytes, chunk_limit: int = 0) -> Command:
    """Topic suffix after `cmd/` and the raw payload -> Command, or BadCommand saying why.

    `chunk_limit` is update.max_bytes on a box that takes updates (trust keys), else 0:
    bundle commands are then refused like unknown ones."""
    kind = REGISTRY.get(name)
    if kind is None:
        raise BadCommand(f"unknown command {name[:64]!r} (known: {', '.join(COMMANDS)})")
    return kind.parse(name, payload, chunk_limit)


def apply(cmd: Command, samples, updater) -> dict | None:
    """Do what a parsed command says; returns the `sample` message it closed, if any."""
    return REGISTRY[cmd.name].apply(cmd, samples, updater)
