"""Self-supervised pretraining with few labels: VICReg-pretrained + fine-tuned against random init.

Generates a synthetic set, pretrains on all of it (labels ignored), then trains on only
`--labels` fields per class from the pretrained backbone and from random weights, once per
seed, and scores both on the fields not used for training (trainer.fewlabels). Prints the
accuracies, the k-NN accuracy of the features before/after pretraining, and the
pretraining img/s.

    python benchmarks/bench_pretrain.py [--arch custom_cnn|mobilenetv2] [--per-class 150] [--labels 10]
                                        [--size 64] [--look closeup|all] [--pretrain-epochs 80] [--epochs 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.fewlabels import compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="custom_cnn")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--labels", type=int, default=10, help="labelled fields per class for fine-tuning")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--look", default="closeup", help="synthetic look: closeup (twice the magnification: "
                        "cells a tiny input resolves) or all (real-scale fields)")
    parser.add_argument("--pretrain-epochs", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning runs per start (seeds 0..N-1)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-ssl-"))
    r = compare(root, args.arch, args.per_class, args.labels, args.size, args.look, args.pretrain_epochs,
                args.epochs, args.batch, tuple(range(args.seeds)))
    pre = r["pretrain"]
    print(f"pretrain ({pre['backend']}, {args.arch}, {args.size} px, look {args.look}): {pre['images']} images, "
          f"{pre['epochs']} epochs, {pre['img_per_s']} img/s, {pre['wall_s']} s, loss {pre['loss'][0]:.3f} -> "
          f"{pre['loss'][-1]:.3f}, 5-NN accuracy of the features {pre['knn_accuracy_random_init']:.3f} -> "
          f"{pre['knn_accuracy']:.3f}")
    for name in ("random init", "VICReg"):
        acc = 100 * np.array(r[name])
        print(f"{name:>12}: {args.labels} labels/class -> test accuracy {acc.mean():.1f} % "
              f"(seeds: {', '.join(f'{a:.1f}' for a in acc)}; n={r['n']}, chance 25 %)")
    print(f"gain: {100 * r['gain']:+.1f} points")


if __name__ == "__main__":
    main()
