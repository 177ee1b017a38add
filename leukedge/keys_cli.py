"""`leukedge keys new --out DIR`: an Ed25519 signing key pair for a lab (signing.key 0600, signing.pub)."""

from __future__ import annotations

import argparse
from pathlib import Path

from converter.signing import new_keys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["new"], help="new: make a key pair")
    p.add_argument("--out", type=Path, required=True, help="folder for signing.key and signing.pub (kept offline)")


def run(args) -> int:
    pub = new_keys(args.out)
    print(f"wrote {args.out / 'signing.key'} (private, mode 0600) and {pub.path}")
    print(f"fingerprint {pub.fingerprint}")
    return 0
