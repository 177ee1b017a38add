"""Shared fixtures: a real Mosquitto broker and a small synthetic ALL-layout data set."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.broker import Broker, mosquitto_available  # noqa: E402


@pytest.fixture
def broker(tmp_path):
    """A fresh mosquitto on a free 127.0.0.1 port (skips where the binary is missing)."""
    if not mosquitto_available():
        pytest.skip("mosquitto binary not installed (CI installs it with apt-get)")
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small synthetic data set in the ALL layout: 12 fields per class at 64 px."""
    from trainer.synth.fields import generate_dataset

    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, per_class=12, size=64, seed=0)
    return out
