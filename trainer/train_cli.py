"""`leukedge train`: train MobileNetV2 or the custom CNN on an ALL-layout folder (see docs/trainer.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import BadInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="ALL-layout folder (Original/<Class>/...) or any folder of class folders")
    parser.add_argument("--arch", default="mobilenetv2", help="mobilenetv2 (default) or custom_cnn")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write (model.keras, report.json, ...)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="total epochs (default: 30 for pretrained MobileNetV2 = 5 head + 25 fine-tune, "
                             "60 from scratch); early stopping may end sooner")
    parser.add_argument("--img-size", type=int, default=224, help="model input size in px (default 224)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak learning rate (default 1e-3; pretrained fine-tuning uses a tenth of it)")
    parser.add_argument("--weights", default="auto",
                        help="auto (ImageNet if available, else random; default), imagenet, none, or PATH to a "
                             "no-top MobileNetV2 .h5")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier (default 1.0)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="custom CNN filter multiplier (default 1.0 = 32-64-128-256)")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier (default 0.2)")
    parser.add_argument("--smote", action=argparse.BooleanOptionalAction, default=True,
                        help="balance the training split with SMOTE (default on; see docs/data.md)")
    parser.add_argument("--split", default="image", choices=("image", "block"),
                        help="split protocol: image (stratified) or block (runs of 20 files kept together)")
    parser.add_argument("--test-data", type=Path, default=None,
                        help="external test folder; --data is then split into train/val only")
    parser.add_argument("--seed", type=int, default=0, help="seed for split, SMOTE, augmentation, weights")
    parser.add_argument("--subset", default="Original", help="Original (default) or Segmented")
    parser.add_argument("--stain-norm", default="none", choices=("none", "reinhard", "macenko"),
                        help="colour normalisation fitted on the training split (default none)")
    parser.add_argument("--patience", type=int, default=10,
                        help="stop after this many epochs without a better validation score (default 10)")
    parser.add_argument("--bn-recal-images", type=int, default=512,
                        help="training images used to recompute batch-norm statistics before each validation")
    parser.add_argument("--mixed-precision", action="store_true", help="train in mixed bfloat16 (GPUs)")
    parser.add_argument("--workers", type=int, default=2, help="augmentation threads (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.arch not in ("mobilenetv2", "custom_cnn"):
        raise BadInput(f"--arch {args.arch!r}: unknown architecture (choose mobilenetv2 or custom_cnn)")
    from trainer.report import format_table
    from trainer.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(args.data), out=str(args.out), arch=args.arch, epochs=args.epochs, img_size=args.img_size,
        batch=args.batch, lr=args.lr, weights=args.weights, alpha=args.alpha, width=args.width, dropout=args.dropout,
        smote=args.smote, split=args.split, test_data=str(args.test_data) if args.test_data else None,
        seed=args.seed, subset=args.subset, stain_norm=args.stain_norm, patience=args.patience,
        bn_recal_images=args.bn_recal_images, mixed_precision=args.mixed_precision, workers=args.workers,
        verbose=0 if args.quiet else 1)
    report = train(cfg)
    print(format_table(report))
    print(f"run folder: {args.out} (model.keras, report.json, split.json, history.json, train_config.json)")
    return 0
