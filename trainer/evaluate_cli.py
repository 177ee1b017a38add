"""`leukedge evaluate RUN --data DIR`: score a trained model on any folder (see docs/trainer.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.argtypes import positive_int
from trainer.evaluate import evaluate_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="run folder written by `leukedge train` (has model.keras)")
    parser.add_argument("--data", type=Path, required=True,
                        help="folder to score: ALL layout or any folder of class folders (all images in it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report file (default RUN/eval_<folder name>.json; a confusion PNG goes beside it)")
    parser.add_argument("--train-data", type=Path, default=None,
                        help="where the run's training files are now, if the data set moved (for the baseline)")
    parser.add_argument("--subset", default=None, help="Original or Segmented (default: the run's)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip refitting the colour baseline on the run's training split")
    parser.add_argument("--batch", type=positive_int, default=64, help="inference batch size (default 64)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or table")


def run(args: argparse.Namespace) -> int:
    evaluate_run(args.run, args.data, out=args.out, train_data=args.train_data, subset=args.subset,
                 baseline=args.baseline, batch=args.batch, progress=not args.quiet)
    return 0
