"""Errors that map to the command line's exit codes (docs/contracts.md: 2 bad input, 1 internal),
and the one way outside input (a manifest, a config, a command) becomes a checked object or one line."""

from __future__ import annotations

import json

from pydantic import ValidationError


def first_problem(exc, top: str = "(top level)") -> str:
    """A pydantic ValidationError as one line, `field.path: message (and N more)`, the wording
    every validated input (config, manifest, command) reports in."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or top
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{extra}"


class LeukedgeError(Exception):
    """A failure that is not the user's input (a demo step, an export the runtime refused): exit code 1."""

    exit_code = 1


class BadInput(LeukedgeError):
    """Bad input or usage the user can fix (a file, a field, a flag): exit code 2.

    The message is one line naming the file or field and what is wrong.
    """

    exit_code = 2


# Why a frame was skipped: the keys of `stats.frames.bad_<reason>` (docs/edge.md).
BAD_FRAME_REASONS = ("empty", "corrupt", "unreadable", "bit_depth", "grayscale", "shape", "too_small", "too_large")


class BadFrame(BadInput):
    """A single frame or image that cannot be used; callers skip and count it by `reason`.

    The reason is given where the problem is found, so counting never depends on the
    wording of the message (which may contain a file name with any words in it).
    `frame` names the file or frame when the raiser knows it.
    """

    def __init__(self, message: str, reason: str, frame: str | None = None):
        if reason not in BAD_FRAME_REASONS:
            raise ValueError(f"unknown bad-frame reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.frame = frame


class BundleError(BadInput):
    """A bundle that must not be loaded: missing file, hash mismatch, label or shape disagreement."""


def read_input(path, what: str, text: bool = False):
    """A file from outside the kit (key, config), or one BadInput line naming it and what it is."""
    try:
        return path.read_text() if text else path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def json_object(raw: bytes, where: str, error: type[Exception] = BadInput) -> dict:
    """Bytes from outside (a manifest, a command payload) -> a JSON object, or `error` with one line
    starting with `where`: not UTF-8, not JSON, nested too deeply, or not an object."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not JSON: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise error(f"{where}: top level must be a JSON object, got {_json_kind(data)}")
    return data


def validated(model, data: dict, where: str, error: type[Exception] = BadInput):
    """A dict (from JSON, YAML or TOML) checked by the pydantic `model`, or `error` with one line:
    `where: field a.b: message (and N more)`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: field {first_problem(exc)}") from None


def _json_kind(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
