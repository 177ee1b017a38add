"""Hostile configs through the command line: a billion-laughs YAML, an oversized file and
nested `${A:-${B}}`; each is refused (exit 2, one line) or read right, quickly, and no
environment variable's value is ever echoed (it may be a secret)."""

from __future__ import annotations

import pytest

from tests.hostile import assert_refused, leukedge

MAX_CONFIG_BYTES = 1 << 20  # edge.config.MAX_CONFIG_BYTES (not imported, so the old code can be tested)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """Nine levels of nine aliases: 9**9 (387 million) strings once expanded."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nbundle: *a{levels - 1}\n"


def test_billion_laughs_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    # the old loader ran at 100 % CPU and ~25 MB/s until killed; the limit only stops a hang
    line = assert_refused(leukedge("agent", "--check", "--config", path, timeout=60), str(path), "alias *a0")
    assert "line 2" in line


def test_oversized_config_is_refused_unparsed(tmp_path):
    """Just over the cap, and valid YAML: refused for its size, before any parsing."""
    path = tmp_path / "big.yaml"
    filler = "# " + "x" * 1000 + "\n"
    path.write_text("bundle: B\n" + filler * (MAX_CONFIG_BYTES // len(filler) + 1))
    assert_refused(leukedge("agent", "--config", path), str(path), "larger than 1024 KiB")


def test_anchor_without_alias_is_read(tmp_path):
    """An anchor alone expands nothing: the config is read (and fails later, on its unknown key)."""
    path = tmp_path / "anchor.yaml"
    path.write_text("bundle: B\nsauce: &s {uri: S}\n")
    assert_refused(leukedge("agent", "--config", path), "sauce", "unknown key")


def _device_id_case(tmp_path, value: str, env: dict) -> str:
    path = tmp_path / "agent.yaml"
    path.write_text(f'bundle: B\ndevice_id: "{value}"\n')
    return assert_refused(leukedge("agent", "--config", path, env=env), "device_id")


def test_nested_default_is_parsed(tmp_path):
    # the old pattern stopped at the first "}" and kept "${B:-not/valid}" as the value
    line = _device_id_case(tmp_path, "${LEUKEDGE_T_A:-${LEUKEDGE_T_B:-not/valid}}", {})
    assert "'not/valid'" in line, line


def test_nested_default_names_the_missing_inner_variable(tmp_path):
    line = _device_id_case(tmp_path, "${LEUKEDGE_T_A:-${LEUKEDGE_T_B}}", {})
    assert "environment variable LEUKEDGE_T_B is not set" in line, line


def test_unclosed_nested_default_is_refused(tmp_path):
    line = _device_id_case(tmp_path, "${LEUKEDGE_T_A:-${LEUKEDGE_T_B:-x}", {})
    assert "LEUKEDGE_T_A" in line and "no closing }" in line, line


@pytest.mark.parametrize("value", ["${LEUKEDGE_T_A:-${LEUKEDGE_T_B}}", "${LEUKEDGE_T_A}", "id-${LEUKEDGE_T_A}"])
def test_an_environment_value_is_never_echoed(tmp_path, value):
    """A value from the environment that fails validation is named by its variable, never shown."""
    secret = "hunter2\\s3cret/x"  # with a backslash: a repr() of it differs from the value
    line = _device_id_case(tmp_path, value, {"LEUKEDGE_T_A": secret, "LEUKEDGE_T_B": "unused"})
    assert "hunter2" not in line and "s3cret" not in line and "${LEUKEDGE_T_A}" in line, line
