"""A camera URL's credentials never leave the box through a third party's output.

OpenCV and FFmpeg print to the process's stderr themselves, past our logging and its
redaction; under systemd that is the journal. The agent runs as a real process against a
real 127.0.0.1 socket (a server that answers garbage, or nothing listening) and retries
the stream; the secret must appear nowhere: its output, `--check`, the results log, the
outbox.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from leukedge.agent_process import AgentProcess, agent_config
from tests.hostile import bundle, leukedge  # noqa: F401  (bundle: a fixture)

SECRETS = ("secret2", "tok-secret3")


class GarbageServer:
    """Accepts on 127.0.0.1, reads the request, answers a line that is not HTTP, closes; counts connections."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"garbage\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()


def _wait(predicate, timeout: float, what: str, agent: AgentProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or not agent.alive():
            raise AssertionError(f"{what} did not happen:\n{agent.log()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.parametrize("peer", ["garbage", "nothing_listening"])
def test_stream_credentials_never_reach_stderr(tmp_path, bundle, peer):
    from tests.broker import free_port

    server = GarbageServer() if peer == "garbage" else None
    port = server.port if server else free_port()
    uri = f"http://viewer:cam%40secret2@127.0.0.1:{port}/mjpg?token=tok-secret3"
    cfg = agent_config(tmp_path, bundle, uri, source={"uri": uri, "loop": False,
                                                      "watchdog": {"backoff_initial_s": 0.2, "backoff_max_s": 0.4}})
    agent = AgentProcess(tmp_path, cfg).start()
    try:
        _wait(lambda: "retrying" in agent.log(), 120, "a first failed open", agent)
        if server:  # several opens: what native code prints at every retry
            _wait(lambda: server.connections >= 5, 60, "five connection attempts", agent)
        else:
            time.sleep(3)  # about eight more tries at 0.2-0.4 s
    finally:
        assert agent.terminate() == 0, agent.log()
        if server:
            server.close()
    check = leukedge("agent", "--config", agent.config_path, "--check", timeout=180)
    log = agent.log()
    outputs = {"agent output": log, "--check": check.stdout + check.stderr,
               "results log": (tmp_path / "results.jsonl").read_text() if (tmp_path / "results.jsonl").exists() else "",
               "outbox": (tmp_path / "outbox.sqlite").read_bytes().decode("latin-1")}
    for where, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}:\n{text[-3000:]}"
    assert "viewer:***@" in log and "token=***" in log  # the source was named, redacted
    said = re.findall(r"WARNING edge.sources: source \S+: the video backend said: (.*)", log)
    assert 1 <= len(said) <= 2, log  # once (and once more if it changes), not at every retry
    print(f"\n[{peer}] retries seen; native output logged once, scrubbed: {said[0][:160]}")


@pytest.mark.parametrize("text", [
    "got: http://viewer:cam%40secret2@127.0.0.1:80/mjpg?token=tok-secret3",  # the URL as given
    "auth failed for viewer:cam@secret2",  # the password percent-decoded
    "password cam%40secret2 refused; token tok-secret3",  # each secret alone
])
def test_scrub_hides_every_form_of_the_secret(text):
    from edge.redact import scrub

    out = scrub(text, "http://viewer:cam%40secret2@127.0.0.1:80/mjpg?token=tok-secret3")
    assert not any(s in out for s in SECRETS) and "***" in out, out


def test_native_lines_are_caught_and_our_own_logging_is_not(capfd, caplog):
    """fd 2 written by 'native code' inside the block comes back as one scrubbed log line; a
    log record from Python meanwhile goes straight to stderr, not into the captured text."""
    import logging
    import os

    from edge.sources.native_log import native_output_scrubbed, opened

    uri = "rtsp://admin:s3cr3t-pw@127.0.0.1:554/x"
    stream = open(2, "w", closefd=False)  # fd 2, as the command line's basicConfig (sys.stderr)
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="edge.sources"):
            for attempt in range(5):
                if attempt == 3:
                    opened(uri)  # it came back up: the same failure after that is news again
                with native_output_scrubbed(uri):
                    os.write(2, f"[rtsp @ 0x{id(uri):x}] cannot open {uri}\n".encode())
                    logging.getLogger("edge.test").warning("python line")
    finally:
        logging.getLogger().removeHandler(handler)
        stream.close()
    err = capfd.readouterr().err
    said = [r for r in caplog.records if "backend said" in r.getMessage()]
    assert [r.levelname for r in said] == ["WARNING", "DEBUG", "DEBUG", "WARNING", "DEBUG"]  # once per state change
    assert "cannot open rtsp://admin:***@127.0.0.1:554/x" in said[0].getMessage()
    assert "python line" not in said[0].getMessage() and err.count("python line") == 5
    assert "s3cr3t-pw" not in err + " ".join(r.getMessage() for r in caplog.records)
