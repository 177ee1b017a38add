"""`leukedge train`: train MobileNetV2 or the custom CNN on an ALL-layout folder (see docs/trainer.md).

Every option's default lives in `TrainConfig` only: flags default to None, the ones not
given are dropped, and the help text prints the dataclass's values.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from edge.argtypes import positive_int
from edge.stain import METHODS as STAIN_METHODS
from trainer.augment import STRENGTHS
from trainer.models import ARCHS
from trainer.recipes import RECIPES, resolve
from trainer.report import format_table
from trainer.train import LR_SCHEDULES, TrainConfig, train

DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def default_note(name: str) -> str:
    """`default X` for a help text, X read from TrainConfig."""
    value = DEFAULTS[name]
    return f"default {'on' if value is True else 'off' if value is False else value}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="ALL-layout folder (Original/<Class>/...) or any folder of class folders")
    parser.add_argument("--arch", help=f"{' or '.join(ARCHS)} ({default_note('arch')})")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write (model.keras, report.json, ...)")
    parser.add_argument("--epochs", type=positive_int,
                        help="total epochs (default: 30 for pretrained MobileNetV2 = 5 head + 25 fine-tune, "
                             "60 from scratch); early stopping may end sooner")
    parser.add_argument("--img-size", type=int, help=f"model input size in px ({default_note('img_size')})")
    parser.add_argument("--batch", type=positive_int, help=f"batch size ({default_note('batch')})")
    parser.add_argument("--lr", type=float,
                        help=f"peak learning rate ({default_note('lr')}; pretrained fine-tuning uses a tenth of it)")
    parser.add_argument("--weights",
                        help=f"auto (ImageNet if available, else random), imagenet, none, or PATH to a "
                             f"no-top MobileNetV2 .h5 ({default_note('weights')})")
    parser.add_argument("--alpha", type=float, help=f"MobileNetV2 width multiplier ({default_note('alpha')})")
    parser.add_argument("--width", type=float,
                        help=f"custom CNN filter multiplier ({default_note('width')}; 1.0 = 32-64-128-256)")
    parser.add_argument("--dropout", type=float, help=f"dropout before the classifier ({default_note('dropout')})")
    parser.add_argument("--augment", choices=tuple(STRENGTHS),
                        help="colour jitter with the eight symmetries of the field: none (no augmentation), mild "
                             f"(brightness and contrast +-10 %%, hue +-4 deg) or strong (+-25 %%, +-15 deg) "
                             f"({default_note('augment')})")
    parser.add_argument("--label-smoothing", type=float,
                        help=f"smooth the training targets by this much, 0-0.5 ({default_note('label_smoothing')})")
    parser.add_argument("--ema", type=float,
                        help="validate, keep and save an exponential moving average of the weights with this "
                             f"momentum, e.g. 0.99; 0 off ({default_note('ema')})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                        help=f"after the warm-up: cosine decay to 1 %% of the peak, or constant "
                             f"({default_note('lr_schedule')})")
    parser.add_argument("--smote", action=argparse.BooleanOptionalAction,
                        help=f"balance the training split with SMOTE ({default_note('smote')}; see docs/data.md)")
    parser.add_argument("--split", choices=("image", "block"),
                        help=f"split protocol: image (stratified) or block (runs of 20 files kept together; "
                             f"{default_note('split')})")
    parser.add_argument("--test-data", type=Path,
                        help="external test folder; --data is then split into train/val only")
    parser.add_argument("--seed", type=int, help=f"seed for split, SMOTE, augmentation, weights ({default_note('seed')})")
    parser.add_argument("--subset", help=f"Original or Segmented ({default_note('subset')})")
    parser.add_argument("--stain-norm", choices=STAIN_METHODS,
                        help=f"colour normalisation fitted on the training split ({default_note('stain_norm')})")
    parser.add_argument("--patience", type=int,
                        help=f"stop after this many epochs without a better validation score ({default_note('patience')})")
    parser.add_argument("--bn-recal-images", type=int,
                        help=f"training images used to recompute batch-norm statistics before each validation "
                             f"({default_note('bn_recal_images')})")
    parser.add_argument("--mixed-precision", action="store_true", default=None,
                        help="train in mixed bfloat16 (GPUs)")
    parser.add_argument("--workers", type=positive_int,
                        help="augmentation threads (default: 1 on a CPU-only box, 2 with a GPU)")
    parser.add_argument("--recipe", choices=tuple(RECIPES),
                        help="preset: full (the defaults here, for GPUs) or quick (14 epochs, patience 5, "
                             "128 BN recalibration images: a from-scratch model on a 2-core CPU in under an hour); "
                             f"explicit flags override it ({default_note('recipe')})")
    parser.add_argument("--cnn-depth", type=int, choices=(1, 2),
                        help=f"custom CNN convolutions per block after the first; 1 is the paper's design "
                             f"({default_note('cnn_depth')})")
    parser.add_argument("--near-dup-distance", type=int,
                        help="perceptual-hash distance in bits (of 64) under which images count as near-duplicates "
                             f"and stay in one split; -1 off ({default_note('near_dup_distance')})")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress (by default: one line per epoch with loss, validation accuracy, seconds "
                             "and ETA, and a live bar when the output is a terminal)")


# TrainConfig fields that no train flag of the same name sets. `verbose`: the global -v/--verbose
# (debug logging and tracebacks, leukedge.cli) shares the name; it must never turn progress off.
NOT_FLAGS = frozenset({"verbose"})


def config_from(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the flags that were given, over the --recipe preset, over the dataclass defaults.

    Progress (`verbose`) is on unless --quiet is given, with or without the global -v.
    """
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name not in NOT_FLAGS and getattr(args, f.name, None) is not None}
    given.update(data=str(args.data), out=str(args.out))
    if args.test_data is not None:
        given["test_data"] = str(args.test_data)
    if args.quiet:
        given["verbose"] = 0
    return TrainConfig(**resolve(given.pop("recipe", DEFAULTS["recipe"]), given))


def run(args: argparse.Namespace) -> int:
    report = train(config_from(args))
    print(format_table(report))
    print(f"run folder: {args.out} (model.keras, report.json, split.json, history.json, train_config.json)")
    return 0
