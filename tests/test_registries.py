"""One table per fact: the copies that must exist (pydantic validation) agree with their registry."""

from __future__ import annotations

from typing import get_args

import pytest

from edge.backends import CANDIDATES
from edge.manifest import FileEntry, Manifest
from edge.formats import (
    BACKEND_FOR,
    DEFAULT_FORMATS,
    FILE_NAMES,
    FORMATS,
    INT8_FORMATS,
    TABLE,
)
from edge.selftest import FORMAT as SELFTEST_FORMAT
from trainer.models import ARCHS


def test_manifest_arch_literal_is_the_trainer_registry():
    assert get_args(Manifest.model_fields["arch"].annotation) == ARCHS


def test_manifest_format_literal_is_the_format_table():
    """Every model format of the table, plus the one non-model artifact (the self-test data)."""
    assert get_args(FileEntry.model_fields["format"].annotation) == (*FORMATS, SELFTEST_FORMAT)
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
