"""`leukedge synth`: procedural smear fields in the ALL layout, and optionally a video."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import BadInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder; gets Original/<Class>/WBC-...-NNN.jpg")
    parser.add_argument("--per-class", type=int, metavar="N", help="fields per class (Benign, Early, Pre, Pro)")
    parser.add_argument("--size", type=int, default=224, metavar="PX", help="field size in px (default 224, as the ALL set)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed; the same seed gives byte-identical files")
    parser.add_argument("--shortcut", action="store_true",
                        help="make stain hue follow the class (a deliberate shortcut, for robustness tests)")
    parser.add_argument("--video", type=Path, metavar="FILE",
                        help="also write a video of consecutive fields (.mp4 or .avi) and FILE.json")
    parser.add_argument("--video-fields", type=int, default=8, metavar="K", help="fields in the video (default 8)")
    parser.add_argument("--video-size", type=int, default=320, metavar="PX", help="video frame size (default 320)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.video is None:
        raise BadInput("synth: give --out DIR (with --per-class N) and/or --video FILE")
    if args.out is not None:
        if args.per_class is None:
            raise BadInput("synth: --per-class N is required with --out")
        from trainer.synth.fields import generate_dataset

        counts = generate_dataset(args.out, args.per_class, size=args.size, seed=args.seed,
                                  shortcut=args.shortcut, progress=args.progress)
        kind = "shortcut (hue follows class)" if args.shortcut else "decorrelated stain"
        print(f"synth: wrote {sum(counts.values())} fields at {args.size} px ({kind}, seed {args.seed}) "
              f"to {args.out / 'Original'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.video is not None:
        from trainer.synth.video import write_video

        if args.video_fields < 1:
            raise BadInput(f"synth: --video-fields must be at least 1, got {args.video_fields}")
        meta = write_video(args.video, n_fields=args.video_fields, size=args.video_size, seed=args.seed)
        print(f"synth: wrote video {args.video} ({meta['n_frames']} frames, {len(meta['fields'])} fields, "
              f"{meta['fps']} fps) and {meta['sidecar']}")
    return 0
