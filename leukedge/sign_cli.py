"""`leukedge sign BUNDLE --key signing.key [--release N]`: set the release, write BUNDLE/manifest.sig."""

from __future__ import annotations

import argparse
from pathlib import Path

from converter.signing import sign
from edge.argtypes import release_number


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle folder (every file is sha256-checked before signing)")
    p.add_argument("--key", type=Path, required=True, help="Ed25519 private key (leukedge keys new)")
    p.add_argument("--release", type=release_number, default=None,
                   help="release number, 1 to 2147483647 (default: one more than the highest signed with "
                        "this key, kept in signing.release beside the key)")


def run(args) -> int:
    out = sign(args.bundle, args.key, args.release)
    print(f"signed {args.bundle}: release {out['release']}, manifest sha256 {out['manifest_sha256']}, "
          f"key {out['fingerprint']}")
    return 0
