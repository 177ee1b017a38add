"""Shared fixtures: a real Mosquitto broker and a small synthetic ALL-layout data set."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.broker import Broker, mosquitto_available  # noqa: E402


# The longest test file (a five-minute self-supervised pretraining test) goes first: `make test`
# gives each of two workers whole files in collection order, and started last it ran alone at the end.
LONGEST_FIRST = ("test_pretrain.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: the rest keep their order


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


DEFAULT_FILES = ("leukedge-outbox.sqlite", "leukedge-outbox.sqlite.lock", "leukedge-results.jsonl")


@pytest.fixture(scope="session", autouse=True)
def repo_root_stays_clean():
    """No test may leave the agent's default outbox or result log in the checkout (they would be
    someone's queued results on a real box): every test gives its own paths under tmp_path."""
    from tests.agent_proc import ROOT

    before = {n for n in DEFAULT_FILES if (ROOT / n).exists()}
    yield
    left = sorted(n for n in DEFAULT_FILES if (ROOT / n).exists() and n not in before)
    assert not left, f"a test left {left} in the repository root: give it outbox/result_log paths under tmp_path"
