"""Few labels on real images: VICReg-pretrained against random init, on a RUN's own split.

VICReg pretrains on the RUN's training split (labels ignored); then, per label count and
seed, that many training fields per class (drawn with the seed) train the classifier from
the pretrained weights and from random ones for the same number of optimiser steps, and the
RUN's test split, which pretraining never saw, scores both (trainer.fewlabels.compare_on_split).
Images are symlinked from the RUN's data root, never copied. Prints one row per label count
and writes OUT/fewlabels.json.

    python benchmarks/real_fewlabels.py RUN --out OUT [--arch custom_cnn] [--size 128] [--labels 10,25,50]
        [--seeds 3] [--pretrain-epochs 30] [--steps 150] [--width 0.5] [--cnn-depth 1] [--data-root DIR]
    python benchmarks/real_fewlabels.py --rescore-baseline OUT   # refit the colour baselines, reprint
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.fewlabels import INITS, compare_on_split, rescore_baselines  # noqa: E402


def table(result: dict) -> str:
    lines = ["| labels/class | random init % (seeds) | VICReg % (seeds) | gain, points | colour baseline % |",
             "|---|---|---|---|---|"]
    for labels in sorted({r["labels"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["labels"] == labels]
        acc = {i: [100 * r["accuracy"] for r in rows if r["init"] == i] for i in INITS}
        base = np.mean([100 * r["baseline_accuracy"] for r in rows])
        cells = [f"{np.mean(acc[i]):.1f} ({', '.join(f'{a:.1f}' for a in acc[i])})" for i in INITS]
        lines.append(f"| {labels} | {cells[0]} | {cells[1]} | {np.mean(acc['VICReg']) - np.mean(acc['random init']):+.1f} "
                     f"| {base:.1f} |")
    return "\n".join(lines)


def rescore(out: Path) -> None:
    result = rescore_baselines(out, json.loads((out / "fewlabels.json").read_text()))
    (out / "fewlabels.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table(result))


def main() -> None:
    if sys.argv[1:2] == ["--rescore-baseline"] and len(sys.argv) == 3:
        rescore(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a RUN folder (its split.json names the images)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="custom_cnn")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--labels", default="10,25,50", help="labelled fields per class, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning optimiser steps, every label count")
    parser.add_argument("--width", type=float, default=None, help="custom CNN width (default: the small sizing)")
    parser.add_argument("--alpha", type=float, default=None, help="MobileNetV2 alpha (default: the small sizing)")
    parser.add_argument("--cnn-depth", type=int, default=None)
    parser.add_argument("--data-root", type=Path, default=None, help="where split.json's paths live, if moved")
    args = parser.parse_args()

    split = args.run / "split.json"
    if not split.is_file():
        sys.exit(f"{args.run}: no split.json (a `leukedge train` run folder is expected)")
    sizing = {k: v for k, v in (("width", args.width), ("alpha", args.alpha), ("cnn_depth", args.cnn_depth))
              if v is not None} or None
    args.out.mkdir(parents=True, exist_ok=True)
    result = compare_on_split(split, args.out, args.arch, args.size, tuple(int(v) for v in args.labels.split(",")),
                              tuple(range(args.seeds)), args.pretrain_epochs, args.steps, data_root=args.data_root,
                              sizing=sizing, progress=lambda line: print(line, flush=True))
    pre = result["pretrain"]
    print(f"pretrain ({pre['backend']}, {args.arch} {result['sizing']}, {args.size} px): {pre['images']} images, "
          f"{pre['epochs']} epochs, {pre['img_per_s']} img/s, {pre['wall_s']} s; test split n={result['n_test']}")
    print(table(result))
    (args.out / "fewlabels.json").write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
