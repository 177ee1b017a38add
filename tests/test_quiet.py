"""The demo's console: native writes to fds 1 and 2 and Python warnings go to a log file, while
print, logging and the kit's own stderr lines still reach the console; afterwards all is restored."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.agent_proc import ROOT

SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from pathlib import Path
    from leukedge.quiet import chatter_to
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    with chatter_to(Path(sys.argv[1])):
        os.write(1, b"native stdout line\\n")
        os.write(2, b"native stderr line\\n")
        warnings.warn_explicit("a library future warning", FutureWarning, "lib.py", 3, module="tensorflow.x")
        warnings.warn("a library user warning")
        print("kit progress line")
        logging.getLogger("trainer").info("kit log line")
        print("kit stderr line", file=sys.stderr)
    os.write(2, b"after: native stderr is the console again\\n")
    print("after: stdout")
""")


def test_chatter_goes_to_the_file_and_the_kits_lines_to_the_console(tmp_path):
    log = tmp_path / "third-party.log"
    got = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0, got.stderr
    kept = log.read_text()
    for line in ("native stdout line", "native stderr line", "a library future warning", "a library user warning"):
        assert line in kept and line not in got.stdout + got.stderr, line
    assert got.stdout.splitlines() == ["kit progress line", "after: stdout"]
    assert got.stderr.splitlines() == ["kit log line", "kit stderr line", "after: native stderr is the console again"]
    assert "kit" not in kept
