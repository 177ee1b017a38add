"""Who made a bundle: Ed25519 detached signatures over the exact bytes of `manifest.json`.

The manifest already lists every file's sha256, so one signature over it covers the
whole bundle. A bundle is named by its manifest sha256 everywhere (store folder,
`event`, `info`). Verification lives on the box (`cryptography`, part of the `edge`
extra); making keys and signing is the lab's side (converter/signing.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from edge.errors import BadInput, BundleError, read_input
from edge.manifest import MANIFEST

SIGNATURE = "manifest.sig"


class TrustError(BundleError):
    """A bundle whose signature is missing, malformed, or made by no trusted key."""


class PublicKey(NamedTuple):
    path: str
    fingerprint: str  # "SHA256:<hex>" of the raw 32-byte Ed25519 public key
    key: object  # cryptography Ed25519PublicKey


def fingerprint(raw_public: bytes) -> str:
    return "SHA256:" + hashlib.sha256(raw_public).hexdigest()


def load_public_key(path: str | Path) -> PublicKey:
    """A PEM Ed25519 public key file, or BadInput naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    data = read_input(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise BadInput(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path}: not an Ed25519 public key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(str(path), fingerprint(raw), key)


def load_keys(paths) -> list[PublicKey]:
    return [load_public_key(p) for p in paths]


def manifest_sha256(bundle_dir: str | Path) -> str:
    """The bundle's name: sha256 of its manifest.json bytes."""
    path = Path(bundle_dir) / MANIFEST
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None


def verify_signature(bundle_dir: str | Path, keys: list[PublicKey]) -> PublicKey:
    """The trusted key that signed BUNDLE/manifest.json, or TrustError saying why none did."""
    from cryptography.exceptions import InvalidSignature

    bundle_dir = Path(bundle_dir)
    sig_path = bundle_dir / SIGNATURE
    if not keys:
        raise TrustError(f"{bundle_dir}: no trusted keys configured")
    if not sig_path.is_file() or sig_path.is_symlink():
        raise TrustError(f"{bundle_dir}: unsigned (no {SIGNATURE})")
    signature = sig_path.read_bytes()
    if len(signature) != 64:
        raise TrustError(f"{sig_path}: {len(signature)} bytes, an Ed25519 signature has 64")
    data = (bundle_dir / MANIFEST).read_bytes()
    for key in keys:
        try:
            key.key.verify(signature, data)
            return key
        except InvalidSignature:
            continue
    raise TrustError(f"{bundle_dir}: signature does not verify with any trusted key "
                     f"({', '.join(k.fingerprint[:19] for k in keys)}): unknown signer or manifest changed")
