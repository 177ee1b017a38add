"""Bundle updates on the box, without a broker: the start rules, the drop folder, `leukedge install`,
rollback, and kill -9 at each step of an install (a pause injected through LEUKEDGE_INSTALL_PAUSE).

The agent runs as a real process on a looping folder of frames with real signed bundles.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from edge.store import Store
from leukedge.agent_process import CLI, AgentProcess, write_images
from leukedge.cli import main
from tests.agent_proc import ROOT
from tests.update_kit import Kit, assert_switch, events, results, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return Kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture
def frames(tmp_path):
    return write_images(tmp_path / "frames", n=12)


def install(config, *args, timeout=90) -> tuple[int, dict | None]:
    proc = subprocess.run([sys.executable, "-c", CLI, "install", *args, "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout + 120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc.returncode, json.loads(lines[-1]) if lines else None


def test_with_keys_an_unsigned_configured_bundle_exits_2(kit, tmp_path, frames, capsys):
    from leukedge.bundle_factory import make_small_bundle

    cfg = kit.config(tmp_path, frames)
    cfg["bundle"] = str(make_small_bundle(tmp_path, formats=("tflite-int8",)))
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["agent", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsigned" in err[0]
    assert main(["agent", "--config", str(path), "--check"]) == 2
    assert "unsigned" in capsys.readouterr().err


def test_refer_below_override_is_used_and_reported(kit, tmp_path, frames):
    from edge.agent import Agent
    from edge.config import validate

    cfg = kit.config(tmp_path, frames, thresholds={"refer_below": 0.99})
    cfg["max_frames"] = 5
    agent = Agent(validate(cfg))
    agent.run()
    info = agent.info()
    assert info["thresholds"]["refer_below"] == 0.99 and info["thresholds"]["refer_below_source"] == "config"
    assert info["bundle"]["manifest_sha256"] == kit.a_sha and info["bundle"]["release"] == 1
    assert all(r["decision"] == "refer" for r in results(tmp_path))  # a near-chance model never reaches 0.99


def test_drop_folder_install_then_cli_rollback_and_reinstall(kit, tmp_path, frames):
    drop = tmp_path / "usb"
    drop.mkdir()
    agent = AgentProcess(tmp_path, kit.config(tmp_path, frames, update={"watch_dir": str(drop)})).start()
    try:
        assert wait_for(lambda: len(results(tmp_path)) >= 5, 60), agent.log()
        shutil.copy(kit.b_pack, drop / "b.leukedge")
        ev = wait_for(lambda: [e for e in events(tmp_path) if e["status"] == "installed"], 60)
        assert ev and ev[0]["manifest_sha256"] == kit.b_sha and ev[0]["origin"] == "drop", agent.log()
        assert json.loads((drop / "b.leukedge.event.json").read_text())["status"] == "installed"
        n = len(results(tmp_path))
        assert wait_for(lambda: len(results(tmp_path)) >= n + 5, 30)
        assert_switch(results(tmp_path), kit.a_model, kit.b_model)

        rc, ev = install(agent.config_path, "--rollback")
        assert rc == 0 and ev["status"] == "rolled_back" and ev["manifest_sha256"] == kit.a_sha, agent.log()
        rc, ev = install(agent.config_path, str(kit.a_pack))  # older than nothing now: it is running
        assert rc == 2 and ev["status"] == "rejected" and "already running" in ev["reason"]
        rc, ev = install(agent.config_path, str(kit.b_pack))
        assert rc == 0 and ev["status"] == "installed" and ev["origin"] == "install"
        assert Store(tmp_path / "store").state()["current"] == kit.b_sha
    finally:
        agent.terminate()
    shas = [r["model_sha256"] for r in results(tmp_path)]
    switches = [shas[i] for i in range(1, len(shas)) if shas[i] != shas[i - 1]]
    assert switches == [kit.b_model, kit.a_model, kit.b_model]
    seqs = [r["seq"] for r in results(tmp_path)]
    assert seqs == list(range(1, len(seqs) + 1))
    from leukedge.agent_process import logged

    samples = logged(tmp_path / "results.jsonl", "sample")
    assert "model_change" in {s["closed_by"] for s in samples}  # (none is open when a sample just filled up)
    model_of = {r["seq"]: r["model_sha256"] for r in results(tmp_path)}
    for s in samples:  # no sample pools two models
        assert {model_of[q] for q in range(s["first_seq"], s["last_seq"] + 1)} == {s["model_sha256"]}

    # a restart runs the store's current bundle, not the configured (factory) one
    AgentProcess(tmp_path, {**kit.config(tmp_path, frames), "max_frames": 3}, name="again").start().wait(60)
    assert results(tmp_path)[-1]["model_sha256"] == kit.b_model
    rc, _ = install(agent.config_path, "--rollback", "--factory", timeout=3)
    assert rc == 1  # no agent running: the request waits in the inbox


@pytest.mark.parametrize("step", ["unpacked", "tested", "switched"])
def test_kill9_during_install_leaves_old_or_new_whole(kit, tmp_path, frames, step, monkeypatch):
    monkeypatch.setenv("LEUKEDGE_INSTALL_PAUSE", f"{step}:60")
    cfg = kit.config(tmp_path, frames)
    agent = AgentProcess(tmp_path, cfg).start()
    assert wait_for(lambda: len(results(tmp_path)) >= 3, 60), agent.log()
    inbox = tmp_path / "store" / "inbox"
    shutil.copy(kit.b_pack, inbox / ".b.leukedge")
    (inbox / ".b.leukedge").rename(inbox / "b.leukedge")
    assert wait_for(lambda: f"install paused 60 s at {step}" in agent.log(), 60), agent.log()
    agent.kill9()
    monkeypatch.delenv("LEUKEDGE_INSTALL_PAUSE")
    n = len(results(tmp_path))
    agent = AgentProcess(tmp_path, cfg, name="restart").start()
    try:
        assert wait_for(lambda: len(results(tmp_path)) >= n + 3, 60), agent.log()
    finally:
        agent.terminate()
    after = [r["model_sha256"] for r in results(tmp_path)[n:]]
    assert after[0] == kit.a_model  # the state was never recorded: the old bundle, whole
    if kit.b_model in after:  # the pack left in the inbox installs after the restart
        assert step != "switched"
        assert_switch(results(tmp_path)[n:], kit.a_model, kit.b_model)
    assert not list((tmp_path / "store").glob(".tmp-*"))
    state = Store(tmp_path / "store").state()
    assert state["current"] == (kit.b_sha if after[-1] == kit.b_model else None)


def test_install_rollback_factory_through_a_running_agent(kit, tmp_path, frames):
    agent = AgentProcess(tmp_path, kit.config(tmp_path, frames)).start()
    try:
        assert wait_for(lambda: len(results(tmp_path)) >= 3, 60), agent.log()
        rc, ev = install(agent.config_path, str(kit.b_pack))
        assert rc == 0 and ev["status"] == "installed" and ev["manifest_sha256"] == kit.b_sha, agent.log()
        rc, ev = install(agent.config_path, "--rollback", "--factory")
        assert rc == 0 and ev["status"] == "rolled_back" and ev["manifest_sha256"] == kit.a_sha, agent.log()
        assert ev["origin"] == "install" and ev["release"] == 1
        n = len(results(tmp_path))
        assert wait_for(lambda: len(results(tmp_path)) >= n + 3, 30)
        rc, ev = install(agent.config_path, "--rollback", "--factory")
        assert rc == 2 and ev["status"] == "rejected" and "already running" in ev["reason"]
    finally:
        agent.terminate()
    shas = [r["model_sha256"] for r in results(tmp_path)]
    assert [shas[i] for i in range(1, len(shas)) if shas[i] != shas[i - 1]] == [kit.b_model, kit.a_model]
    st = Store(tmp_path / "store").state()
    assert st["current"] == kit.a_sha
