"""`leukedge verify BUNDLE|NAME.leukedge --pub signing.pub`: signature and every sha256; exit 0 or 2."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from edge.errors import BadInput
from edge.manifest import load_manifest
from edge.pack import safe_unpack
from edge.trust import load_keys, manifest_sha256, verify_signature


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle folder or .leukedge pack")
    p.add_argument("--pub", type=Path, action="append", required=True,
                   help="trusted public key (repeat for several)")
    p.add_argument("--max-bytes", type=int, default=64_000_000, help="largest pack to unpack (default 64 MB)")


def run(args) -> int:
    keys = load_keys(args.pub)
    if not args.bundle.exists():
        raise BadInput(f"{args.bundle}: does not exist")
    with tempfile.TemporaryDirectory(prefix="leukedge-verify-") as tmp:
        bundle = args.bundle
        if bundle.is_file():
            bundle = Path(tmp) / "bundle"
            safe_unpack(args.bundle, bundle, args.max_bytes)
        key = verify_signature(bundle, keys)
        manifest = load_manifest(bundle)
        print(f"ok: {manifest.name} release {manifest.release}, "
              f"manifest sha256 {manifest_sha256(bundle)}, {len(manifest.files)} files sha256-verified, "
              f"signed by {key.fingerprint} ({key.path})")
    return 0
