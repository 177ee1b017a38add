"""One table per fact: the copies that must exist (pydantic validation) agree with their registry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from edge.backends import CANDIDATES
from edge.commands import COMMANDS, REGISTRY
from edge.formats import (
    BACKEND_FOR,
    DEFAULT_FORMATS,
    FILE_NAMES,
    FORMATS,
    INT8_FORMATS,
    TABLE,
)
from edge.homeassistant import DEFAULT_DISCOVERY_PREFIX
from edge.manifest import ARCH_NAMES, FileEntry, Manifest
from edge.messages import ALL_COMMANDS, CMD, DEFAULT_PREFIX, UP_QOS, command_leaf, topic
from edge.ood import FORMAT as OOD_FORMAT
from edge.selftest import FORMAT as SELFTEST_FORMAT
from edge.stain import METHODS, StainNorm
from trainer.models import ARCHS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"


def test_manifest_arch_literal_is_the_trainer_registry():
    assert get_args(Manifest.model_fields["arch"].annotation) == ARCHS


def test_manifest_format_literal_is_the_format_table():
    """Every model format of the table, plus the non-model artifacts (self-test data, the guard's arrays)."""
    assert get_args(FileEntry.model_fields["format"].annotation) == (*FORMATS, SELFTEST_FORMAT, OOD_FORMAT)
    with pytest.raises(Exception, match="format"):
        FileEntry(path="m.tflite", format="tflite-int4", sha256="0" * 64)


def test_every_format_has_a_file_name_and_a_backend_that_runs_it():
    assert len(set(FILE_NAMES.values())) == len(TABLE)
    runnable = {fmt for c in CANDIDATES for fmt in c.formats}
    assert runnable == set(FORMATS)
    assert set(DEFAULT_FORMATS) <= set(BACKEND_FOR) and set(INT8_FORMATS) <= set(BACKEND_FOR)
    assert set(BACKEND_FOR) == set(FORMATS) - {"tflite-edgetpu"}  # the Edge TPU file needs its chip


def test_manifest_refuses_an_unknown_arch():
    with pytest.raises(Exception, match="arch"):
        Manifest(name="b", arch="resnet50")


def test_manifest_arch_literal_is_the_edge_tuple():
    assert get_args(Manifest.model_fields["arch"].annotation) == ARCH_NAMES


def test_stain_norm_methods_are_the_stain_table():
    assert get_args(StainNorm.model_fields["method"].annotation) == METHODS
    with pytest.raises(Exception, match="method"):
        StainNorm(method="vahadane")


def test_every_format_has_a_self_test_tolerance_held_to_a_known_format():
    for fmt in TABLE:
        assert fmt.selftest.value > 0, fmt.name
        assert fmt.held_to is None or fmt.held_to in FORMATS, fmt.name


def test_commands_are_one_registry_on_the_cmd_leaf():
    assert COMMANDS == tuple(REGISTRY) and len(set(COMMANDS)) == len(COMMANDS)
    assert all(command_leaf(name).startswith(f"{CMD}/") for name in COMMANDS)
    assert ALL_COMMANDS == f"{CMD}/#"


def test_bridge_forwards_exactly_the_topic_table():
    """deploy/mosquitto/bridge.conf: every device -> broker leaf out at its QoS, commands in."""
    lines = re.findall(r"(?m)^topic (\S+) (in|out) (\d)$", (DEPLOY / "bridge.conf").read_text())
    want = {(topic(DEFAULT_PREFIX, "+", leaf), "out", str(qos)) for leaf, qos in UP_QOS.items()}
    want.add((topic(DEFAULT_PREFIX, "+", ALL_COMMANDS), "in", "1"))
    assert set(lines) == want and len(lines) == len(want)


def test_broker_acl_roles_match_the_topic_table():
    """deploy/mosquitto/add-device.sh: a device writes its own prefix and reads its own commands; a lab
    reads all and writes commands; a bridge writes exactly the device -> broker leaves and reads commands."""
    text = (DEPLOY / "add-device.sh").read_text()
    roles = {}
    for role, block in re.findall(r"(?ms)^    (device|lab|bridge)\) printf(.*?);;", text):
        roles[role] = set(re.findall(r'"topic (read|write) (\S+)"', block))
    assert set(roles) == {"device", "lab", "bridge"}
    device = "$NAME"
    discovery = DEFAULT_DISCOVERY_PREFIX  # Home Assistant's: a device writes its own node's configs, a lab reads them
    assert roles["device"] == {("write", topic(DEFAULT_PREFIX, device, "#")),
                               ("read", topic(DEFAULT_PREFIX, device, ALL_COMMANDS)), ("write", f"{discovery}/+/$node/#")}
    assert roles["lab"] == {("read", topic(DEFAULT_PREFIX, "+", "#")), ("write", topic(DEFAULT_PREFIX, "+", ALL_COMMANDS)),
                            ("read", f"{discovery}/#")}
    assert roles["bridge"] == ({("write", topic(DEFAULT_PREFIX, "+", leaf)) for leaf in UP_QOS}
                               | {("read", topic(DEFAULT_PREFIX, "+", ALL_COMMANDS))})
    listed = re.search(r"bridge +publish leukedge/\+/\{([a-z,]+)\}", text)  # the usage text says the same
    assert listed and set(listed.group(1).split(",")) == set(UP_QOS)
