"""`leukedge synth`: procedural smear fields in the ALL layout, and optionally a video."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import BadInput
from trainer.synth.fields import generate_dataset
from trainer.synth.video import write_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder; gets Original/<Class>/WBC-...-NNN.jpg")
    parser.add_argument("--per-class", type=int, metavar="N", help="fields per class (Benign, Early, Pre, Pro)")
    parser.add_argument("--size", type=int, default=224, metavar="PX", help="field size in px (default 224, as the ALL set)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed; the same seed gives byte-identical files")
    parser.add_argument("--look", default="all", choices=("all", "closeup"),
                        help="all: the ALL set's scale and crowding (default); closeup: about 3x magnification")
    parser.add_argument("--shortcut", action="store_true",
                        help="make stain hue follow the class (a deliberate shortcut, for robustness tests)")
    parser.add_argument("--video", type=Path, metavar="FILE",
                        help="also write a video of consecutive fields (.mp4 or .avi) and FILE.json")
    parser.add_argument("--video-fields", type=int, default=8, metavar="K", help="fields in the video (default 8)")
    parser.add_argument("--video-per-slide", type=int, default=2, metavar="F",
                        help="fields per slide (one slide = one patient, one class; default 2)")
    parser.add_argument("--video-size", type=int, default=320, metavar="PX", help="video frame size (default 320)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.video is None:
        raise BadInput("synth: give --out DIR (with --per-class N) and/or --video FILE")
    if args.out is not None:
        if args.per_class is None:
            raise BadInput("synth: --per-class N is required with --out")
        counts = generate_dataset(args.out, args.per_class, size=args.size, seed=args.seed,
                                  shortcut=args.shortcut, progress=args.progress, look=args.look)
        kind = "shortcut (stain session follows class)" if args.shortcut else "stain sessions independent of class"
        print(f"synth: wrote {sum(counts.values())} {args.look} fields at {args.size} px ({kind}, seed {args.seed}) "
              f"to {args.out / 'Original'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.video is not None:
        if args.video_fields < 1 or args.video_per_slide < 1:
            raise BadInput(f"synth: --video-fields and --video-per-slide must be at least 1, "
                           f"got {args.video_fields} and {args.video_per_slide}")
        meta = write_video(args.video, n_fields=args.video_fields, size=args.video_size, seed=args.seed,
                           per_slide=args.video_per_slide, look=args.look)
        print(f"synth: wrote video {args.video} ({meta['n_frames']} frames, {len(meta['slides'])} slides of "
              f"{len(meta['fields'])} fields, "
              f"{meta['fps']} fps) and {meta['sidecar']}")
    return 0
