"""`leukedge pack BUNDLE --out NAME.leukedge`: one deterministic archive of a (signed) bundle."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from edge.pack import pack
from edge.trust import SIGNATURE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle folder (sign it first: boxes with trust keys refuse unsigned)")
    p.add_argument("--out", type=Path, required=True, help="pack file to write (NAME.leukedge)")


def run(args) -> int:
    out = pack(args.bundle, args.out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    note = "" if (args.bundle / SIGNATURE).is_file() else " (unsigned)"
    print(f"wrote {out}: {out.stat().st_size} bytes, sha256 {digest}{note}")
    return 0
