"""Signed bundles and packs for the update tests: two real, different models (A release 1, B
release 2) signed by a lab key, plus every kind of bad pack an attacker or a broken link makes."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np

from converter.signing import new_keys, sign
from edge.manifest import MANIFEST, load_manifest, sha256_file
from edge.pack import pack
from edge.trust import SIGNATURE, manifest_sha256
from leukedge.agent_process import agent_config, logged
from leukedge.bundle_factory import make_small_bundle


class Kit:
    def __init__(self, root: Path):
        self.root = root
        self.keys = root / "keys"
        new_keys(self.keys)
        self.a = make_small_bundle(root / "a", formats=("tflite-int8",))
        self.b = make_small_bundle(root / "b", formats=("tflite-int8",), calib=8)  # other calibration: other model
        sign(self.a, self.keys / "signing.key", release=1)
        sign(self.b, self.keys / "signing.key", release=2)
        self.a_sha, self.b_sha = manifest_sha256(self.a), manifest_sha256(self.b)
        self.a_model = load_manifest(self.a).file("tflite-int8").sha256
        self.b_model = load_manifest(self.b).file("tflite-int8").sha256
        assert self.a_model != self.b_model
        self.a_pack = pack(self.a, root / "a.leukedge")
        self.b_pack = pack(self.b, root / "b.leukedge")

    def config(self, workdir: Path, frames: Path, mqtt_url=None, **over) -> dict:
        cfg = agent_config(workdir, self.a, frames, mqtt_url, **over)
        cfg["source"]["fps"] = 25
        cfg["trust"] = {"keys": [str(self.keys / "signing.pub")]}
        cfg.setdefault("update", {})["store"] = str(workdir / "store")
        return cfg

    # ---------------------------------------------------------------- bad packs

    def tampered(self) -> Path:
        """One byte of the model file flipped inside the pack."""
        data = bytearray(self.b_pack.read_bytes())
        with tarfile.open(self.b_pack) as tar:
            model = next(m for m in tar.getmembers() if m.name.endswith(".tflite"))
        data[model.offset_data + model.size // 2] ^= 0x01
        out = self.root / "tampered.leukedge"
        out.write_bytes(bytes(data))
        return out

    def unsigned(self, tmp: Path) -> Path:
        b = make_small_bundle(tmp, formats=("tflite-int8",), calib=8)
        data = json.loads((b / MANIFEST).read_text())
        data["release"] = 9
        (b / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
        return pack(b, self.root / "unsigned.leukedge")

    def stranger(self, tmp: Path) -> Path:
        b = make_small_bundle(tmp, formats=("tflite-int8",), calib=8)
        new_keys(tmp / "stranger")
        sign(b, tmp / "stranger" / "signing.key", release=9)
        return pack(b, self.root / "stranger.leukedge")

    def traversal(self, name: str = "../evil.txt") -> Path:
        """A correctly signed manifest and signature plus a member that escapes the folder."""
        out = self.root / ("absolute.leukedge" if name.startswith("/") else "traversal.leukedge")
        with tarfile.open(out, "w") as tar:
            for member, data in ((MANIFEST, (self.b / MANIFEST).read_bytes()),
                                 (SIGNATURE, (self.b / SIGNATURE).read_bytes()), (name, b"owned\n")):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out

    def selftest_fails(self, tmp: Path) -> Path:
        """Signed and intact, but its self-test holds the runtime to outputs it cannot produce."""
        b = make_small_bundle(tmp, formats=("tflite-int8",), calib=8)
        st = b / "selftest.npz"
        with np.load(st) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["expected_tflite-int8"] = arrays["expected_tflite-int8"][:, ::-1].copy()
        np.savez_compressed(st, **arrays)
        data = json.loads((b / MANIFEST).read_text())
        for f in data["files"]:
            if f["format"] == "selftest":
                f["sha256"], f["size_bytes"] = sha256_file(st), st.stat().st_size
        (b / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
        sign(b, self.keys / "signing.key", release=8)
        return pack(b, self.root / "selftest-fails.leukedge")


def wait_for(predicate, timeout: float = 60.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def results(workdir: Path) -> list[dict]:
    return logged(workdir / "results.jsonl", "result")


def events(workdir: Path) -> list[dict]:
    """Bundle events in the local log (an event's own `type`, "bundle", is the line's type)."""
    return logged(workdir / "results.jsonl", "bundle")


def assert_switch(res: list[dict], old: str, new: str) -> int:
    """seq has no gap, results carry `old` then `new` (one switch point); returns the switch index."""
    seqs = [r["seq"] for r in res]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap in seq"
    shas = [r["model_sha256"] for r in res]
    k = shas.index(new)
    assert set(shas[:k]) == {old} and set(shas[k:]) == {new}
    return k
