"""`leukedge robustness RUN|BUNDLE`: accuracy under stain and acquisition shifts (see docs/robustness.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.stain import METHODS as STAIN_METHODS
from trainer.robustness import robustness_report, shift_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="RUN|BUNDLE",
                        help="a training run folder (model.keras + split.json) or a bundle folder (manifest.json)")
    parser.add_argument("--data", type=Path, default=None,
                        help="RUN: the data set it was trained on (re-roots split.json; default: the recorded "
                             "path); with --images all, or for a BUNDLE: an ALL-layout folder scored in full")
    parser.add_argument("--images", choices=("auto", "split", "all"), default="auto",
                        help="split: the RUN's test split; all: every image of --data; "
                             "auto (default): split for a RUN, all for a BUNDLE")
    parser.add_argument("--out", type=Path, default=None,
                        help="robustness.json to write (default: RUN|BUNDLE/robustness.json; the PNG goes next to it)")
    parser.add_argument("--stain-norm", choices=(*STAIN_METHODS, "both"), default="reinhard",
                        help="normalisation(s) to compare against none (default: reinhard); the model's own "
                             "training normalisation is always included")
    parser.add_argument("--backend", default="auto",
                        help="BUNDLE only: edge backend to run the model with (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    report = robustness_report(args.target, data=args.data, out=args.out, stain_norm=args.stain_norm,
                               images=args.images, backend=args.backend, progress=not args.no_progress)
    d = report["data"]
    print(f"{report['target']['kind']} {report['target']['path']} ({report['target']['runtime']}), "
          f"trained with stain norm: {report['trained_with']}; scored {d['n']} images ({d['images']}, {d['root']})")
    print(shift_table(report))
    out = args.out or args.target / "robustness.json"
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0
