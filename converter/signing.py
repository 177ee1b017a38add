"""The lab's side of trust: make an Ed25519 key pair, sign a bundle, keep the release counter.

`sign` sets the manifest's `release` (one more than the highest this key signed, kept in
a small file beside the key, or an explicit number; 1 to MAX_RELEASE = 2**31 - 1, since
a box refuses every release not above the one it runs), rewrites `manifest.json`, and
writes `manifest.sig`: a detached signature over the manifest's exact bytes, which list
every file's sha256. The box verifies with edge/trust.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge.errors import BadInput, read_input
from edge.manifest import MANIFEST, MAX_RELEASE, load_manifest
from edge.trust import SIGNATURE, PublicKey, fingerprint, manifest_sha256

PRIVATE, PUBLIC = "signing.key", "signing.pub"


def new_keys(out: Path) -> PublicKey:
    """Write OUT/signing.key (mode 0600) and OUT/signing.pub; refuse to overwrite a key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE, out / PUBLIC
    for p in (priv_path, pub_path):
        if p.exists():
            raise BadInput(f"{p}: exists; a signing key is never overwritten (choose another --out)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key()
    pub_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(str(pub_path), fingerprint(raw), pub)


def load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    data = read_input(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BadInput(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path}: not an Ed25519 private key")
    return key


def release_file(key_path: Path) -> Path:
    """The counter beside the key: signing.key -> signing.release."""
    return Path(key_path).with_suffix(".release")


def _last_release(key_path: Path) -> int:
    path = release_file(key_path)
    if not path.exists():
        return 0
    text = path.read_text().strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_RELEASE):
        raise BadInput(f"{path}: not a release number from 0 to {MAX_RELEASE}; fix it or pass --release N")
    return int(text)


def check_release(release: int) -> int:
    """A release number a box accepts: 1 to MAX_RELEASE, or BadInput naming the bound."""
    if not 1 <= release <= MAX_RELEASE:
        shown = str(release) if len(str(release)) <= 20 else f"of {len(str(release))} digits"
        raise BadInput(f"--release {shown}: must be from 1 to {MAX_RELEASE}")
    return release


def sign(bundle: Path, key_path: Path, release: int | None = None) -> dict:
    """Set `release`, rewrite the manifest, sign it. Returns release, manifest sha256 and fingerprint."""
    from cryptography.hazmat.primitives import serialization

    bundle = Path(bundle)
    load_manifest(bundle)  # every file present and matching its sha256: never sign a broken bundle
    key = load_private_key(key_path)
    last = _last_release(key_path)
    if release is None:
        if last >= MAX_RELEASE:
            raise BadInput(f"{release_file(key_path)}: already at the highest release {MAX_RELEASE}")
        release = last + 1
    check_release(release)
    path = bundle / MANIFEST
    data = json.loads(path.read_text())
    data["release"] = release
    text = json.dumps(data, indent=2) + "\n"
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    (bundle / SIGNATURE).write_bytes(key.sign(text.encode()))
    counter = release_file(key_path)
    if release > last:
        counter.write_text(f"{release}\n")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"release": release, "manifest_sha256": manifest_sha256(bundle), "fingerprint": fingerprint(raw)}
