"""Shared helpers of the hostile-input suites (tests/test_hostile_*.py).

Every case there asserts the exit code, the one line that names what is wrong, and that
nothing already queued is lost.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from leukedge.agent_process import CLI
from tests.agent_proc import ROOT



@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real small bundle (tiny trained custom CNN at 64 px, converted; cached per session)."""
    from leukedge.bundle_factory import make_small_bundle

    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


def leukedge(*args, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in its own process, run from a new empty folder, so an agent started without
    --outbox / --result-log leaves its default files there, not in the checkout."""
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True,
                          cwd=tempfile.mkdtemp(prefix="leukedge-cli-"), timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one `error:` line on stderr naming the problem, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def queued(outbox: Path) -> list[tuple[str, bytes]]:
    db = sqlite3.connect(str(outbox))
    try:
        return db.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    finally:
        db.close()
