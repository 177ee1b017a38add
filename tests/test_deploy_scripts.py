"""deploy/: every script's --dry-run prints its plan and changes nothing; shellcheck; the
systemd unit verifies; the broker config renders and runs.

The dry runs execute with a PATH in which every tool that could change the system
(apt-get, systemctl, useradd, openssl, ...) is a stub that records its call and fails, so
a step that escaped --dry-run shows up as a recorded call.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.config import validate
from tests.broker import mosquitto_available
from tests.secure_broker import SecureBroker, try_connect

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "leukedge-agent.service"
SCRIPTS = sorted(DEPLOY.rglob("*.sh"))
MUTATING = ("apt-get", "apt", "systemctl", "useradd", "usermod", "groupadd", "udevadm", "curl", "gpg",
            "openssl", "mosquitto_passwd", "install", "chgrp", "chown", "runuser", "pip", "pip3", "trtexec")
# Paths a real install writes; a dry run must leave each as it found it.
SYSTEM_PATHS = ("/opt/leukedge", "/etc/leukedge", "/etc/systemd/system/leukedge-agent.service",
                "/etc/systemd/system/leukedge-agent.service.d", "/etc/mosquitto/conf.d/leukedge.conf",
                "/etc/mosquitto/leukedge", "/etc/udev/rules.d/71-leukedge-edgetpu.rules",
                "/etc/apt/sources.list.d/coral-edgetpu.list", "/usr/share/keyrings/coral-edgetpu.gpg",
                "/var/lib/leukedge", "/var/log/leukedge")


def system_state() -> dict:
    state = {p: os.path.exists(p) for p in SYSTEM_PATHS}
    state["user"] = subprocess.run(["getent", "passwd", "leukedge"], capture_output=True).returncode
    return state


@pytest.fixture
def stub_path(tmp_path):
    """A PATH whose system-changing tools record their call in calls.log and fail."""
    bindir, log = tmp_path / "stubs", tmp_path / "calls.log"
    bindir.mkdir()
    for name in MUTATING:
        stub = bindir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 97\n')
        stub.chmod(0o755)
    return bindir, log


def dry_run(script: Path, *args, stubs) -> subprocess.CompletedProcess:
    bindir, log = stubs
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    before = system_state()
    proc = subprocess.run([str(script), "--dry-run", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not log.exists(), f"--dry-run ran a real command:\n{log.read_text()}"
    assert system_state() == before
    assert "[dry-run]" in proc.stdout
    return proc


def planned_file(stdout: str, path: str) -> str:
    """The content a dry run says it would write to `path`."""
    m = re.search(rf"^\[dry-run\] write {re.escape(path)} \(mode \d+\):\n((?:    \| .*\n?)*)", stdout, re.M)
    assert m, f"the plan does not write {path}"
    return "".join(line[6:] + "\n" for line in m.group(1).splitlines())


@pytest.fixture
def bundle_dir(tmp_path):
    """Only the manifest matters to the installers' argument check."""
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "manifest.json").write_text('{"name": "b", "arch": "custom_cnn"}')
    return d


# --------------------------------------------------------------------------- shellcheck


SHELLCHECKED = SCRIPTS + sorted((ROOT / "benchmarks").glob("*.sh"))  # and the benchmarks' own scripts


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (CI installs it with apt-get)")
@pytest.mark.parametrize("script", SHELLCHECKED, ids=[str(s.relative_to(ROOT)) for s in SHELLCHECKED])
def test_shellcheck(script):
    proc = subprocess.run(["shellcheck", "-x", str(script.relative_to(ROOT))], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(s.relative_to(DEPLOY)) for s in SCRIPTS])
def test_scripts_are_strict_bash(script):
    text = script.read_text()
    if script.name == "lib.sh" or script.name.endswith("-lib.sh"):
        assert text.startswith("# shellcheck shell=bash")  # sourced, not run
        return
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(script, os.X_OK)
    assert "--dry-run" in text


# --------------------------------------------------------------------------- dry runs


def test_make_certs_dry_run(tmp_path, stub_path):
    out = dry_run(DEPLOY / "mosquitto/make-certs.sh", "--out", tmp_path / "certs", "--host", "clinic.local",
                  "--ip", "10.0.0.5", "--client", "bridge-c1", stubs=stub_path).stdout
    assert not (tmp_path / "certs").exists()
    assert "openssl req -x509" in out and "subjectAltName=DNS:clinic.local,IP:10.0.0.5" in out
    assert "bridge-c1.crt" in out


def test_add_device_dry_run(tmp_path, stub_path):
    out = dry_run(DEPLOY / "mosquitto/add-device.sh", "--etc", tmp_path / "etc", "micro-7", stubs=stub_path).stdout
    assert not (tmp_path / "etc").exists()
    assert "topic write leukedge/micro-7/#" in out and "topic read leukedge/micro-7/cmd/#" in out
    lab = dry_run(DEPLOY / "mosquitto/add-device.sh", "--etc", tmp_path / "etc", "--role", "lab", "lims",
                  stubs=stub_path).stdout
    assert "topic read leukedge/+/#" in lab


def test_add_device_acl_covers_the_devices_home_assistant_discovery_and_no_other(tmp_path, stub_path):
    """A device with a '.' in its id may write its own discovery configs (node id with '_'), not another's."""
    from paho.mqtt.client import topic_matches_sub

    from edge.homeassistant import discovery_configs

    out = dry_run(DEPLOY / "mosquitto/add-device.sh", "--etc", tmp_path / "etc", "scope.7", stubs=stub_path).stdout
    writes = [line.split()[-1] for line in out.splitlines() if line.strip(" |").startswith("topic write")]
    for t in discovery_configs("leukedge", "scope.7"):
        assert any(topic_matches_sub(w, t) for w in writes), t
    for t in discovery_configs("leukedge", "scope-8"):
        assert not any(topic_matches_sub(w, t) for w in writes), t
    lab = dry_run(DEPLOY / "mosquitto/add-device.sh", "--etc", tmp_path / "etc", "--role", "lab", "ha",
                  stubs=stub_path).stdout
    assert "topic read homeassistant/#" in lab


def test_install_broker_dry_run(tmp_path, stub_path):
    pw = tmp_path / "bridge.pw"
    pw.write_text("s3cret-bridge-pw\n")
    out = dry_run(DEPLOY / "mosquitto/install-broker.sh", "--etc", tmp_path / "etc", "--device", "micro-7",
                  "--central", "lab.example.org:8883", "--site", "c1", "--bridge-password-file", pw,
                  stubs=stub_path).stdout
    assert not (tmp_path / "etc").exists()
    conf = planned_file(out, f"{tmp_path}/etc/conf.d/leukedge.conf")
    assert "allow_anonymous false" in conf and "listener 8883" in conf
    bridge = planned_file(out, f"{tmp_path}/etc/conf.d/leukedge-bridge.conf")
    assert "address lab.example.org:8883" in bridge and "cleansession false" in bridge
    assert "s3cret-bridge-pw" not in out  # secrets are never printed


@pytest.mark.parametrize("platform", ["pi", "jetson"])
def test_agent_installer_dry_run(platform, tmp_path, stub_path, bundle_dir):
    pw = tmp_path / "mqtt.pw"
    pw.write_text("device-secret-123\n")
    out = dry_run(DEPLOY / platform / "install.sh", "--device-id", "micro-7", "--bundle", bundle_dir,
                  "--mqtt-password-file", pw, "--start", stubs=stub_path).stdout
    assert "device-secret-123" not in out
    assert "python3 -m venv --system-site-packages /opt/leukedge/venv" in out
    assert re.search(r"pip install .*\[edge\]", out.replace("\\", ""))  # printf %q escapes [ ]
    assert "systemctl enable leukedge-agent.service" in out
    assert "agent --check --config /etc/leukedge/agent.yaml" in out
    # The config the installer writes is one the agent accepts, and its writable paths are
    # exactly the unit's ReadWritePaths.
    import yaml

    config = validate(yaml.safe_load(planned_file(out, "/etc/leukedge/agent.yaml")))
    assert config.device_id == "micro-7" and config.mqtt.username == "micro-7"
    rw = unit_values(UNIT.read_text(), "ReadWritePaths")[0].split()
    assert sorted(rw) == sorted({str(config.outbox.path.parent), str(config.result_log.path.parent)})
    assert config.store.parent == config.outbox.path.parent  # the bundle store is writable under the unit
    if platform == "pi":
        assert "python3-picamera2" in out and "libedgetpu1-std" in out
        assert "pycoral is not installed" in out
        assert 'GROUP="plugdev"' in planned_file(out, "/etc/udev/rules.d/71-leukedge-edgetpu.rules")
    else:
        assert "onnxruntime" in out and "jetson.conf" in out


def test_installers_refuse_bad_arguments(tmp_path, stub_path):
    bindir, _ = stub_path
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    cases = [
        (DEPLOY / "pi/install.sh", "--bundle", tmp_path / "missing"),
        (DEPLOY / "jetson/install.sh", "--device-id", "bad/id"),
        (DEPLOY / "pi/install.sh", "--mqtt", "http://x"),
        (DEPLOY / "mosquitto/add-device.sh", "--etc", tmp_path, "dev+#"),
        (DEPLOY / "mosquitto/add-device.sh", "--etc", tmp_path, "--role", "admin", "x"),
        (DEPLOY / "mosquitto/install-broker.sh", "--etc", tmp_path, "--tls-port", "0"),
        (DEPLOY / "mosquitto/install-broker.sh", "--etc", tmp_path, "--central", "lab:8883"),
        (DEPLOY / "mosquitto/make-certs.sh", "--days", "soon"),
    ]
    for script, *args in cases:
        proc = subprocess.run([str(script), "--dry-run", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=30)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, (script.name, args, proc.stderr)
    assert list(tmp_path.iterdir()) == [bindir]


# --------------------------------------------------------------------------- systemd unit


def unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_unit_hardening():
    text = UNIT.read_text()
    one = {k: unit_values(text, k) for k in ("User", "NoNewPrivileges", "ProtectSystem", "Restart",
                                             "ProtectHome", "PrivateTmp", "RestartPreventExitStatus")}
    assert one == {"User": ["leukedge"], "NoNewPrivileges": ["yes"], "ProtectSystem": ["strict"],
                   "Restart": ["on-failure"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"],
                   "RestartPreventExitStatus": ["2"]}
    assert unit_values(text, "CapabilityBoundingSet") == [""]
    # What the camera and the Edge TPU need stays reachable.
    assert not unit_values(text, "PrivateDevices") and not unit_values(text, "MemoryDenyWriteExecute")
    for dev in ("char-video4linux", "char-dma_heap", "char-usb_device"):
        assert f"{dev} rw" in unit_values(text, "DeviceAllow")
    assert set(unit_values(text, "SupplementaryGroups")[0].split()) == {"video", "plugdev"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("drop_in", [None, "jetson.conf"])
def test_systemd_analyze_verify(tmp_path, drop_in):
    """The venv's executable does not exist on a build machine, so ExecStart points at
    /bin/true for the check; a drop-in is appended, which is how systemd merges it."""
    text = UNIT.read_text()
    if drop_in:
        text += (DEPLOY / "systemd" / drop_in).read_text()
    text = text.replace("/opt/leukedge/venv/bin/leukedge", "/bin/true")
    unit = tmp_path / "leukedge-agent.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_unit_is_notify_with_a_watchdog():
    """The agent sends READY=1 and WATCHDOG=1 (edge/station/notify.py); systemd restarts a hung loop."""
    text = UNIT.read_text()
    assert unit_values(text, "Type") == ["notify"] and unit_values(text, "NotifyAccess") == ["main"]
    watchdog = int(unit_values(text, "WatchdogSec")[0])
    assert 30 <= watchdog <= 300 and "AF_UNIX" in unit_values(text, "RestrictAddressFamilies")[0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_kiosk_user_unit_verifies(tmp_path):
    """deploy/pi's kiosk unit opens the page on loopback; Chromium's path is swapped for the check."""
    text = (DEPLOY / "pi" / "leukedge-kiosk.service").read_text()
    assert "--kiosk" in text and "http://127.0.0.1:8080/" in text
    unit = tmp_path / "leukedge-kiosk.service"
    unit.write_text(text.replace("/usr/bin/chromium-browser", "/bin/true"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    proc = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_kiosk_waits_for_the_page():
    """The kiosk unit's ExecStartPre (systemd's $$ unescaped) returns 0 once the page's port listens."""
    import socket

    pre = unit_values((DEPLOY / "pi" / "leukedge-kiosk.service").read_text(), "ExecStartPre")[0]
    script = re.fullmatch(r"/bin/bash -c '(.*)'", pre).group(1).replace("$$", "$").replace("seq 120", "seq 2")
    with socket.socket() as page:
        page.bind(("127.0.0.1", 0))
        page.listen()
        port = page.getsockname()[1]
        assert subprocess.run(["bash", "-c", script.replace("8080", str(port))], timeout=30).returncode == 0
    assert subprocess.run(["bash", "-c", script.replace("8080", str(port))], timeout=30).returncode == 1


# --------------------------------------------------------------------------- broker config


@pytest.mark.skipif(not (mosquitto_available() and shutil.which("openssl")), reason="needs mosquitto and openssl")
def test_rendered_broker_config_runs(tmp_path):
    with SecureBroker(tmp_path) as b:
        assert try_connect(b.local_port, "devA", b.password("devA")) == "Success"
        assert try_connect(b.tls_port, "lab", b.password("lab"), b.ca) == "Success"
        log = b.log()
    # Broker.start() knows the broker is up when a plain TCP connect to the TLS port succeeds; that
    # probe closes without a handshake, which mosquitto logs as an SSL EOF: the harness's, not the config's.
    probe = ("unexpected eof while reading", "Client <unknown> disconnected: Protocol error.")
    log = "\n".join(line for line in log.splitlines() if not line.endswith(probe))
    assert "Error" not in log, log
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (b.etc / "leukedge").rglob("*") if p.is_file()}
    assert modes["ca.key"] == modes["devA.password"] == "0o600"
    assert modes["server.key"] == modes["passwd"] == modes["acl"] == "0o640"
