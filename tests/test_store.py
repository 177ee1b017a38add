"""The bundle store's state file and history, and the chunked transfer's parser and reassembly
(no model needed: these are files and bytes)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from edge.chunks import BadChunk, Chunk, Reassembler, parse_chunk
from edge.commands import BadCommand, parse
from edge.store import Store

A, B, C, D = (hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c", b"d"))


def test_record_keeps_history_prunes_beyond_keep_and_rollback_pops(tmp_path):
    store = Store(tmp_path / "store", keep=3)
    for sha in (A, B, C, D):
        store.path(sha).mkdir()
    store.record(B, previous=A)
    store.record(C, previous=B)
    store.record(D, previous=C)
    st = store.state()
    assert st["current"] == D and st["history"] == [C, B, A]
    assert sorted(store.prune()) == [A]  # keep 3: D, C, B
    assert store.previous() == C
    store.record(C, previous=D, rollback=True)
    assert store.state() == {"current": C, "history": [B, A], "seen": []}
    assert not list((tmp_path / "store").glob(".*.tmp"))


def test_state_file_garbage_reads_as_empty_and_stale_unpacks_are_removed(tmp_path):
    root = tmp_path / "store"
    (root / ".tmp-abc").mkdir(parents=True)
    (root / "state.json").write_text("{not json")
    store = Store(root)
    assert store.state()["current"] is None and not (root / ".tmp-abc").exists()
    (root / "state.json").write_text(json.dumps({"current": "../../etc"}))
    assert store.state()["current"] is None


def _chunk_payload(sha, index, total, data: bytes, **extra) -> bytes:
    return json.dumps({"sha256": sha, "index": index, "total": total,
                       "data": base64.b64encode(data).decode(), **extra}).encode()


@pytest.mark.parametrize("payload, why", [
    (b"not json", "not JSON"),
    (_chunk_payload(A, 0, 1, b"x", extra=1), "exactly"),
    (_chunk_payload("ABC", 0, 1, b"x"), "64 lowercase hex"),
    (_chunk_payload(A, 1, 1, b"x"), "index < total"),
    (_chunk_payload(A, -1, 1, b"x"), "index < total"),
    (json.dumps({"sha256": A, "index": 0, "total": 1, "data": "%%%"}).encode(), "base64"),
    (_chunk_payload(A, 0, 1, b""), "empty"),
    (_chunk_payload(A, 0, 1, b"x" * 200_000), "over the update.max_bytes"),
])
def test_parse_chunk_rejects(payload, why):
    with pytest.raises(BadChunk, match=why):
        parse_chunk(payload, max_bytes=100_000)


def test_bundle_commands_refused_without_trust_keys_and_rollback_parsed():
    with pytest.raises(BadCommand, match="no trust.keys"):
        parse("bundle/chunk", _chunk_payload(A, 0, 1, b"x"))
    assert parse("bundle/rollback", b'{"factory": true}', chunk_limit=1000).body == {"factory": True}
    with pytest.raises(BadCommand):
        parse("bundle/rollback", b'{"to": "/etc"}', chunk_limit=1000)
    chunk = parse("bundle/chunk", _chunk_payload(A, 0, 2, b"xy"), chunk_limit=1000).body
    assert chunk == Chunk(A, 0, 2, b"xy")


def test_reassembly_in_any_order_resumes_and_checks_the_whole_sha(tmp_path):
    data = bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    parts = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    r = Reassembler(tmp_path / "incoming", max_bytes=100_000)
    for i in (3, 0, 7):
        progress, pack = r.add(Chunk(sha, i, len(parts), parts[i]))
        assert pack is None
    assert progress.received == 3 and 1 in progress.missing
    r2 = Reassembler(tmp_path / "incoming", max_bytes=100_000)  # an agent restart keeps what arrived
    for i in range(len(parts)):
        if i not in (3, 0, 7):
            progress, pack = r2.add(Chunk(sha, i, len(parts), parts[i]))
    assert pack is not None and pack.read_bytes() == data and progress.missing == []
    bad = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(BadChunk, match="sha256 mismatch"):
        r2.add(Chunk(bad, 0, 1, b"payload"))
    with pytest.raises(BadChunk, match="over update.max_bytes"):
        Reassembler(tmp_path / "small", max_bytes=1500).add(Chunk(sha, 0, 2, b"x" * 1600))


def test_update_commands_bad_input_exit_2(tmp_path, capsys):
    from leukedge.cli import main

    assert main(["push", str(tmp_path / "nope.leukedge"), "--mqtt", "mqtt://127.0.0.1:1", "--device-id", "x"]) == 2
    assert "no such pack file" in capsys.readouterr().err
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"bundle: {tmp_path}\n")
    assert main(["install", str(tmp_path / "x.leukedge"), "--config", str(cfg)]) == 2
    assert "no trust.keys" in capsys.readouterr().err
    assert main(["install", "--factory", "--config", str(cfg)]) == 2
    assert main(["fleet", "--mqtt", "http://example"]) == 2
    assert "not mqtt://" in capsys.readouterr().err


def test_install_refuses_a_signed_manifest_that_points_outside_the_pack(tmp_path):
    """Signed by the trusted key, but `files[].path` names a file beside the bundle: refused
    before anything reads it (the pack's own plain files are all a bundle may use)."""
    import io
    import tarfile

    from converter.signing import load_private_key, new_keys
    from edge.config import validate
    from edge.update import Updater

    new_keys(tmp_path / "keys")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    text = json.dumps({"name": "evil", "arch": "custom_cnn", "release": 5, "files": [
        {"path": "../outside.bin", "format": "tflite-int8", "sha256": hashlib.sha256(b"secret").hexdigest()}]})
    (bundle / "manifest.json").write_text(text)  # `leukedge sign` refuses this bundle: signed by hand
    (bundle / "manifest.sig").write_bytes(load_private_key(tmp_path / "keys" / "signing.key").sign(text.encode()))
    pack = tmp_path / "evil.leukedge"
    with tarfile.open(pack, "w") as tar:
        for name in ("manifest.json", "manifest.sig"):
            data = (bundle / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cfg = validate({"bundle": str(bundle), "trust": {"keys": [str(tmp_path / "keys" / "signing.pub")]},
                    "outbox": {"path": str(tmp_path / "state" / "outbox.sqlite")}})
    up = Updater(cfg)
    up._install(pack, "install", False, None, None)
    (kind, ev), = up.poll()
    assert kind == "event" and ev["status"] == "rejected" and "not a file of the pack" in ev["reason"]
    assert ev["manifest_sha256"] and ev["release"] == 5
    assert not [p for p in (tmp_path / "state" / "bundles").iterdir() if p.name not in ("inbox", "incoming")]
