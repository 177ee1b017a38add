"""The box at start when its store is broken: it falls back (previous bundle, else the factory
`bundle:`), records that atomically and announces it; and the free-disk check before an unpack.

Real signed bundles and a real agent in-process on a folder of frames."""

from __future__ import annotations

import shutil

import pytest

from edge.agent import Agent
from edge.config import validate
from edge.pack import safe_unpack
from edge.store import Store
from edge.trust import manifest_sha256
from leukedge.agent_process import write_images
from tests.update_kit import Kit, events, results

pytestmark = pytest.mark.slow

MISSING = "0" * 64


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return Kit(tmp_path_factory.mktemp("kit"))


def _stored(kit, store: Store, how: str, tmp) -> str:
    """Put a bundle into the store that is broken in the way `how` names; its manifest sha256."""
    if how == "missing":
        return MISSING
    if how == "tampered":
        dest = store.path(kit.b_sha)
        shutil.copytree(kit.b, dest)
        model = next(dest.glob("*.tflite"))
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
        return kit.b_sha
    pack = kit.stranger(tmp / "s") if how == "stranger" else kit.selftest_fails(tmp / "t")
    staging = tmp / "unpacked"
    safe_unpack(pack, staging, 1 << 30)
    sha = manifest_sha256(staging)
    shutil.move(staging, store.path(sha))
    return sha


@pytest.mark.parametrize("how, previous", [("missing", True), ("tampered", False), ("stranger", True),
                                           ("selftest", False)])
def test_a_broken_current_bundle_falls_back_and_is_recorded(kit, tmp_path, how, previous):
    cfg = kit.config(tmp_path, write_images(tmp_path / "frames", n=6))
    cfg["max_frames"] = 4
    store = Store(tmp_path / "store")
    broken = _stored(kit, store, how, tmp_path)
    history = []
    if previous:  # a good earlier install: B
        shutil.copytree(kit.b, store.path(kit.b_sha))
        history = [kit.b_sha]
    store._write({"current": broken, "history": history, "seen": []})

    assert Agent(validate(cfg)).run() == 0
    want_sha, want_model = (kit.b_sha, kit.b_model) if previous else (kit.a_sha, kit.a_model)
    assert {r["model_sha256"] for r in results(tmp_path)} == {want_model}
    ev = [e for e in events(tmp_path) if e["origin"] == "start"]
    assert len(ev) == 1 and ev[0]["status"] == "rolled_back" and ev[0]["manifest_sha256"] == want_sha
    assert ev[0]["broken_sha256"] == broken and ev[0]["factory"] is (not previous)
    assert broken[:12] in ev[0]["reason"], ev[0]["reason"]
    st = store.state()
    assert st["current"] == want_sha and broken not in st["history"]
    assert not store.path(broken).exists()  # pruned: never tried again

    # the next start runs the fallback without another event
    n = len(events(tmp_path))
    assert Agent(validate(cfg)).run() == 0
    assert len(events(tmp_path)) == n and results(tmp_path)[-1]["model_sha256"] == want_model


def test_free_disk_check_rejects_before_unpacking(kit, tmp_path, monkeypatch):
    from edge import update

    up = update.Updater(validate(kit.config(tmp_path, write_images(tmp_path / "frames", n=1))))
    size = kit.b_pack.stat().st_size
    real = shutil.disk_usage

    def nearly_full(path):
        return real(path)._replace(free=2 * size + update.FREE_MARGIN - 1)

    monkeypatch.setattr(update.shutil, "disk_usage", nearly_full)
    up._install(kit.b_pack, "install", False, tmp_path / "b.event.json", None)
    (kind, ev), = up.poll()
    assert kind == "event" and ev["status"] == "rejected" and "not enough disk space" in ev["reason"]
    assert not list(up.store.root.glob(".tmp-*")) and not store_bundles(up.store)
    assert "not enough disk space" in (tmp_path / "b.event.json").read_text()

    monkeypatch.setattr(update.shutil, "disk_usage", lambda path: real(path)._replace(free=2 * size
                                                                                      + update.FREE_MARGIN))
    up._install(kit.b_pack, "install", False, None, None)
    (kind, ready), = up.poll()
    assert kind == "ready" and ready.sha == kit.b_sha
    ready.backend.close()


def store_bundles(store: Store) -> list:
    return [d for d in store.root.iterdir() if d.is_dir() and len(d.name) == 64]
