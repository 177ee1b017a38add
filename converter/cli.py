"""`leukedge convert RUN --out BUNDLE`: quantize a trained model into a validated bundle."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from converter.convert import convert
from edge.formats import DEFAULT_FORMATS, FORMATS
from edge.argtypes import release_number


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="training run folder (model.keras, split.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help=f"comma-separated, from: {', '.join(FORMATS)} (default {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--calib", type=int, default=300,
                   help="class-balanced calibration images from the training split (default 300; fewer warns)")
    p.add_argument("--data", type=Path, default=None,
                   help="data set root, if it moved since training (re-roots split.json's paths)")
    p.add_argument("--max-drop", type=float, default=0.5,
                   help="largest int8 accuracy drop vs float Keras, percentage points (default 0.5); over it: exit 2")
    p.add_argument("--qat", action="store_true",
                   help="when int8 misses --max-drop: quantization-aware fine-tuning (fake-quant weights "
                        "and activations), then convert again (see docs/converter.md)")
    p.add_argument("--allow-cpu-fallback", action="store_true",
                   help="accept an Edge TPU compilation where some ops run on the CPU")
    p.add_argument("--name", default=None, help="bundle name in the manifest (default: the --out folder name)")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="leave out the unfamiliar-input guard (a single-output model; the box then cannot tell "
                        "fields unlike the training data)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    p.add_argument("--sign-key", type=Path, default=None,
                   help="sign the bundle with this Ed25519 key (leukedge keys new); release from the key's counter")
    p.add_argument("--release", type=release_number, default=None,
                   help="with --sign-key: this release number (1 to 2147483647) instead")


def run(args: argparse.Namespace) -> int:
    for noisy in ("tensorflow", "tf2onnx", "absl"):  # their INFO lines drown the table
        logging.getLogger(noisy).setLevel(logging.WARNING)

    convert(args.run, args.out, formats=args.formats, calib=args.calib, data=args.data, max_drop=args.max_drop,
            qat=args.qat, allow_cpu_fallback=args.allow_cpu_fallback, name=args.name, seed=args.seed,
            sign_key=args.sign_key, release=args.release, guard=args.guard)
    return 0
