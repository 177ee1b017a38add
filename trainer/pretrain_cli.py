"""`leukedge pretrain`: VICReg self-supervised pretraining on a lab's own images (see trainer/pretrain.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.argtypes import positive_int
from trainer.models import ARCHS
from trainer.pretrain import PretrainConfig, pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="labelled folder (ALL layout or class folders); labels only for the k-NN check")
    parser.add_argument("--unlabeled", type=Path, action="append", default=[],
                        help="folder of unlabelled fields (any depth); repeatable")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (backbone.weights.h5, report)")
    parser.add_argument("--arch", default="mobilenetv2", choices=ARCHS)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier (match train)")
    parser.add_argument("--width", type=float, default=1.0, help="custom CNN filter multiplier (match train)")
    parser.add_argument("--cnn-depth", type=int, default=2, choices=(1, 2), help="custom CNN depth (match train)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--proj-dim", type=int, default=512, help="projector width (VICReg expander)")
    parser.add_argument("--subset", default="Original")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=positive_int,
                        help="threads making the two views (default: 1 on a CPU-only box, 2 with a GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress (by default: one line per epoch with the "
                        "VICReg loss, seconds and ETA, and a live bar when the output is a terminal)")


def run(args: argparse.Namespace) -> int:
    report = pretrain(PretrainConfig(
        data=str(args.data), out=str(args.out), unlabeled=[str(u) for u in args.unlabeled], arch=args.arch,
        img_size=args.img_size, alpha=args.alpha, width=args.width, cnn_depth=args.cnn_depth, epochs=args.epochs,
        batch=args.batch, lr=args.lr, proj_dim=args.proj_dim, subset=args.subset, seed=args.seed, workers=args.workers,
        verbose=0 if args.quiet else 1))
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    print(f"VICReg {report['arch']}: {report['images']} images, {report['img_per_s']} img/s, loss "
          f"{report['loss'][0]:.3f} -> {report['loss'][-1]:.3f}; k-NN accuracy {pct(report['knn_accuracy'])} "
          f"(random init {pct(report['knn_accuracy_random_init'])})")
    print(f"weights: {report['weights']}  (leukedge train --weights {report['weights']})")
    return 0
