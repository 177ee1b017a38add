"""Signing, packing and the self-test on a real converted bundle (workstation side of issue: signed bundles).

`keys new` -> `sign` (release counter beside the key) -> `verify` -> `pack` (same bytes
twice) -> `safe_unpack` refusing every kind of hostile member -> the self-test on LiteRT.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edge.manifest import MANIFEST, load_manifest
from edge.pack import UnsafeArchive, pack, safe_unpack
from edge.trust import SIGNATURE, TrustError, load_keys, manifest_sha256, verify_signature
from leukedge.bundle_factory import make_small_bundle
from leukedge.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    assert main(["keys", "new", "--out", str(out)]) == 0
    return out


@pytest.fixture
def bundle(tmp_path):
    return make_small_bundle(tmp_path)


def test_keys_new_writes_private_key_0600_and_refuses_to_overwrite(keys, capsys):
    assert stat.S_IMODE(os.stat(keys / "signing.key").st_mode) == 0o600
    assert b"PUBLIC KEY" in (keys / "signing.pub").read_bytes()
    assert main(["keys", "new", "--out", str(keys)]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_sign_sets_increasing_release_and_verify_prints_fingerprint(keys, bundle, tmp_path, capsys):
    other = make_small_bundle(tmp_path)
    key = keys / "signing.key"
    assert main(["sign", str(bundle), "--key", str(key)]) == 0
    first = load_manifest(bundle).release
    assert main(["sign", str(other), "--key", str(key)]) == 0
    assert load_manifest(other).release == first + 1
    assert (keys / "signing.release").read_text().strip() == str(first + 1)
    assert main(["sign", str(other), "--key", str(key), "--release", "100"]) == 0
    assert load_manifest(other).release == 100
    capsys.readouterr()
    assert main(["verify", str(other), "--pub", str(keys / "signing.pub")]) == 0
    out = capsys.readouterr().out
    assert "release 100" in out and load_keys([keys / "signing.pub"])[0].fingerprint in out
    assert manifest_sha256(other) in out


def test_verify_refuses_edited_manifest_unsigned_and_unknown_key(keys, bundle, tmp_path, capsys):
    main(["sign", str(bundle), "--key", str(keys / "signing.key")])
    pub = keys / "signing.pub"
    # an adversary lowers the refer threshold: the signature no longer matches
    data = json.loads((bundle / MANIFEST).read_text())
    data["thresholds"]["refer_below"] = 0.0
    edited = make_small_bundle(tmp_path)
    (edited / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
    (edited / SIGNATURE).write_bytes((bundle / SIGNATURE).read_bytes())
    assert main(["verify", str(edited), "--pub", str(pub)]) == 2
    assert "does not verify" in capsys.readouterr().err
    unsigned = make_small_bundle(tmp_path)
    assert main(["verify", str(unsigned), "--pub", str(pub)]) == 2
    assert "unsigned" in capsys.readouterr().err
    stranger = tmp_path / "stranger"
    main(["keys", "new", "--out", str(stranger)])
    with pytest.raises(TrustError):
        verify_signature(bundle, load_keys([stranger / "signing.pub"]))


def test_pack_is_deterministic_and_round_trips(keys, bundle, tmp_path):
    main(["sign", str(bundle), "--key", str(keys / "signing.key")])
    a, b = tmp_path / "a.leukedge", tmp_path / "b.leukedge"
    assert main(["pack", str(bundle), "--out", str(a)]) == 0
    os.utime(bundle / MANIFEST, (1, 1))  # times never reach the archive
    pack(bundle, b)
    assert a.read_bytes() == b.read_bytes()
    names = safe_unpack(a, tmp_path / "out", max_bytes=64_000_000)
    assert names[:2] == [MANIFEST, SIGNATURE] and "selftest.npz" in names
    assert manifest_sha256(tmp_path / "out") == manifest_sha256(bundle)
    verify_signature(tmp_path / "out", load_keys([keys / "signing.pub"]))
    assert main(["verify", str(a), "--pub", str(keys / "signing.pub")]) == 0


def _tar(tmp_path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "evil.leukedge"
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo(MANIFEST)
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
    return path


def _member(name: str, kind=tarfile.REGTYPE, size: int = 1, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, link
    return info


@pytest.mark.parametrize("member, why", [
    (_member("../escape.txt"), "traversal"),
    (_member("/etc/passwd"), "absolute"),
    (_member("sub/../../x"), "traversal"),
    (_member("link", tarfile.SYMTYPE, link="/etc/passwd"), "symlink"),
    (_member("hard", tarfile.LNKTYPE, link=MANIFEST), "hard link"),
    (_member("dev", tarfile.CHRTYPE), "device file"),
    (_member("fifo", tarfile.FIFOTYPE), "special file"),
    (_member(MANIFEST, size=2), "twice"),
])
def test_safe_unpack_rejects_hostile_members(tmp_path, member, why):
    archive = _tar(tmp_path, member, data=b"{}" if member.name == MANIFEST else b"x")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=why):
        safe_unpack(archive, dest, max_bytes=1000)
    assert not dest.exists() and not (tmp_path / "escape.txt").exists()


def test_safe_unpack_rejects_oversize_members(tmp_path):
    archive = _tar(tmp_path, _member("model.tflite", size=5000), data=b"x" * 5000)
    with pytest.raises(UnsafeArchive, match="over 1000 bytes"):
        safe_unpack(archive, tmp_path / "dest", max_bytes=1000)


def test_selftest_passes_on_litert_and_fails_on_other_expected_outputs(bundle):
    from edge import selftest
    from edge.backends import load_for_manifest

    manifest = load_manifest(bundle)
    st = manifest.file("selftest")
    assert (bundle / st.path).stat().st_size < 400_000
    backend, entry = load_for_manifest(bundle, manifest, backend="litert")
    report = selftest.run(bundle, manifest, entry, backend)
    assert report.n >= 2 and report.max_diff <= report.tolerance
    assert report.tolerance == pytest.approx(entry.output_quant.scale + 1e-6)
    # expected outputs from a runtime that disagrees: the same arrays, shifted by two steps
    with np.load(bundle / st.path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["expected_tflite-int8"] = arrays["expected_tflite-int8"] + 2.5 * entry.output_quant.scale
    selftest.write(bundle / st.path, arrays["images"], {k.removeprefix("expected_"): v
                                                        for k, v in arrays.items() if k != "images"})
    with pytest.raises(selftest.SelfTestFailed, match="over the tflite-int8 tolerance"):
        selftest.run(bundle, manifest, entry, backend)
    swapped = arrays["expected_tflite-int8"][:, ::-1].copy()  # a different top-1
    selftest.write(bundle / st.path, arrays["images"], {"tflite-int8": swapped})
    with pytest.raises(selftest.SelfTestFailed, match="top-1"):
        selftest.run(bundle, manifest, entry, backend)
    assert hashlib.sha256((bundle / st.path).read_bytes()).hexdigest() != st.sha256


def test_convert_with_sign_key_writes_a_signed_bundle(keys, tmp_path):
    from converter.convert import convert
    from leukedge.bundle_factory import make_small_run

    out = convert(make_small_run(tmp_path), tmp_path / "signed", formats=("tflite-int8",), calib=32, max_drop=100.0,
                  progress=False, echo=lambda _m: None, sign_key=keys / "signing.key", release=7)
    assert load_manifest(out).release == 7
    verify_signature(out, load_keys([keys / "signing.pub"]))
    assert main(["convert", "x", "--out", str(tmp_path / "y"), "--sign-key", str(tmp_path / "nope.key")]) == 2


def test_a_bundle_without_selftest_still_loads_with_a_warning(bundle, caplog):
    from edge import selftest
    from edge.backends import load_for_manifest

    manifest = load_manifest(bundle)
    manifest.files = [e for e in manifest.files if e.format != "selftest"]  # as an older converter wrote it
    backend, entry = load_for_manifest(bundle, manifest, backend="litert")
    with caplog.at_level("WARNING"):
        assert selftest.run(bundle, manifest, entry, backend) is None
    assert "has no self-test" in caplog.text
