"""Reading a config file without letting it cost what it should not: at most 1 MiB, read
before parsing; YAML without aliases (a "billion laughs" file expands nine levels of nine
aliases into 387 million values); `${VAR}` / `${VAR:-default}` substitution with nested
defaults, remembering which values came from the environment so an error line can name
the variable instead of showing a possible secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from edge.errors import BadInput

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config is a few kB; more is a mistake or an attack, refused unread
MAX_NESTING = 8  # ${A:-${B:-...}} levels


def substitute_env(value, where: str = "", env=None, used: dict | None = None):
    """Replace ${VAR} / ${VAR:-default} (the default may itself hold ${...}) in every string of
    a parsed config; a missing VAR names its field. `used` collects {value: "${VAR}"} for each
    value taken from the environment, so an error line can hide it (load_config)."""
    env = os.environ if env is None else env
    used = {} if used is None else used
    if isinstance(value, dict):
        return {k: substitute_env(v, f"{where}.{k}" if where else str(k), env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, f"{where}[{i}]", env, used) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    return _expand(value, 0, where, env, used)[0]


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(text: str, i: int, where: str, env, used: dict, depth: int = 0, live: bool = True):
    """Expand `text` from index i; inside a default (depth > 0) stop after its closing brace.
    Returns (expanded text, index after what was read); (None, i) for a default left open.
    A default is only looked into when its variable is unset (`live`), as in the shell.
    Text that is not ${NAME} or ${NAME:-...} stays as written."""
    parts = []
    while i < len(text):
        if depth and text[i] == "}":
            return "".join(parts), i + 1
        m = _NAME.match(text, i + 2) if text.startswith("${", i) else None
        if m is None or text[m.end():m.end() + 1] != "}" and not text.startswith(":-", m.end()):
            parts.append(text[i])
            i += 1
            continue
        name, i = m.group(), m.end()
        default = None
        if text[i] == "}":
            i += 1
        else:
            if depth >= MAX_NESTING:
                raise BadInput(f"config field {where}: ${{...:-...}} nested more than {MAX_NESTING} deep")
            default, i = _expand(text, i + 2, where, env, used, depth + 1, live and name not in env)
            if default is None:
                raise BadInput(f"config field {where}: ${{{name}:-... has no closing }}")
        parts.append(_lookup(name, default, where, env, used) if live else "")
    return (None, i) if depth else ("".join(parts), i)


def _lookup(name: str, default: str | None, where: str, env, used: dict) -> str:
    if name in env:
        used.setdefault(env[name], f"${{{name}}}")
        return env[name]
    if default is not None:
        return default
    raise BadInput(f"config field {where}: environment variable {name} is not set")


def hide_env_values(message: str, used: dict) -> str:
    """An error line with every value taken from the environment replaced by its ${VAR}:
    a validator that quotes the bad value must not print a secret."""
    for value in sorted(used, key=len, reverse=True):
        for form in {value, repr(value)[1:-1]}:
            if form:
                message = message.replace(form, used[value])
    return message


class _AliasRefused(yaml.YAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: `*name` is refused, so nine levels of nine aliases (a "billion
    laughs") cannot expand into a billion values. Anchors alone are harmless and allowed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(f"YAML alias *{event.anchor} at line {event.start_mark.line + 1} refused: "
                                "a config may not use aliases (write the value out)")
        return super().compose_node(parent, index)


def _read_capped(path: Path) -> str:
    """The file's text, refused unread past MAX_CONFIG_BYTES (a FIFO or /dev/zero too)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read config ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise BadInput(f"{path}: config larger than {MAX_CONFIG_BYTES // 1024} KiB (a config is a few kB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: config is not UTF-8 (byte {exc.start})") from None


def read_file(path: Path) -> dict:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) file into a dict, or BadInput naming the file."""
    path = Path(path)
    text = _read_capped(path)
    try:
        if path.suffix.lower() == ".toml":
            import tomllib  # Python 3.11+; a 3.10 box reads YAML only

            data = tomllib.loads(text)
        else:
            data = yaml.load(text, Loader=_NoAliasLoader) or {}  # noqa: S506 - a SafeLoader
    except _AliasRefused as exc:
        raise BadInput(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - yaml and toml raise their own error types
        line = str(exc).replace("\n", " ")
        raise BadInput(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {line}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data
