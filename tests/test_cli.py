"""The `leukedge` command line: lazy imports, help for every subcommand, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leukedge.cli import COMMANDS, main


def test_agent_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from leukedge.cli import main\n"
        "try:\n"
        "    main(['agent', '--help'])\n"
        "finally:\n"
        "    heavy = ('tensorflow', 'keras', 'sklearn', 'matplotlib', 'cv2', 'onnxruntime', 'prometheus_client',\n"
        "             'http.server', 'edge.station.server')  # the page's server loads only when ui is on\n"
        "    bad = [m for m in heavy if m in sys.modules]\n"
        "    print('HEAVY', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "usage: leukedge agent" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: leukedge {command}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    assert main([]) == 2
    assert main(["synth", "--no-such-flag"]) == 2
    assert "error" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "leukedge" in capsys.readouterr().out


def test_a_named_failure_is_one_error_line_not_an_internal_error(tmp_path, monkeypatch, capsys):
    """The demo with nothing fit to deploy (or a failed step) exits 1 with the kit's own message."""
    from edge.errors import LeukedgeError

    def nothing_to_deploy(args):
        raise LeukedgeError("no model both passed the int8 gate and beat the colour baseline; nothing to deploy")

    monkeypatch.setattr("leukedge.demo.run", nothing_to_deploy)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("leukedge demo: error: no model both passed") and "internal error" not in err
    monkeypatch.setattr("leukedge.demo.run", lambda args: {}["bug"])
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert "leukedge demo: internal error: KeyError" in capsys.readouterr().err
