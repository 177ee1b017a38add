"""`leukedge train`: data folder -> RUN/ with model.keras, split.json, history, report, PNGs.

Flow: scan -> remove duplicates -> split -> decode into memory (uint8) -> SMOTE on the
training split only -> fit with augmentation on the training split only -> keep the
best epoch on validation -> score the test split -> colour baseline -> report.

The batch-norm trap. From random weights, a plain recipe (Adam 1e-3, Keras' default
BN momentum 0.99-0.999) can reach 96 % training accuracy while validation calls every
image one class: the moving statistics that inference uses lag far behind weights
that change quickly. Three things keep validation honest here, on any backend:
1. BN momentum 0.9 (trainer.models), so the statistics follow within ~20 steps;
2. a linear warm-up then cosine decay of the learning rate;
3. before every validation, `recalibrate_bn` recomputes the moving statistics of the
   trainable BN layers as the plain average over a fixed sample of training images
   (forward passes in training mode with the momentum set to k/(k+1) for batch k),
   so the model that is validated, checkpointed and saved is the model as trained.
Frozen BN layers (pretrained fine-tuning) keep their ImageNet statistics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import BadInput
from edge.manifest import LABELS, InputSpec
from edge.stain import fit_stain_norm
from edge.stain import normalize as stain_normalize  # the step preprocess ends with
from trainer import neardup
from trainer.augment import STRENGTHS, smote_balance
from trainer.baseline import baseline_accuracy, compare
from trainer.calibrate import class_prior, model_report
from trainer.data import (check_every_class, item_key, load_images, remove_duplicates, report_skipped, scan,
                          split_items)
from trainer.device import accelerated, distribution_strategy, jit_compile
from trainer.models import architecture, build, freeze_base, sizing, unfreeze_upper_base
from trainer.plots import plot_confusion, plot_history
from trainer.progress import make_progress_callback
from trainer.report import classification_report, versions, write_json
from trainer.run import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, REPORT_FILE, SPLIT_FILE
from trainer.split import write_split
from trainer.validation import BN_RECAL_IMAGES, make_validation_callback

log = logging.getLogger(__name__)

HEAD_LR_FACTOR = 0.1  # fine-tuning learning rate = lr * this
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """Every option of a run; stored as RUN/train_config.json (None = the documented default)."""

    data: str
    out: str
    arch: str = "mobilenetv2"
    epochs: int | None = None  # default: 30 pretrained MobileNetV2 (5 head + 25 fine-tune), 60 from scratch
    img_size: int = 224
    batch: int = 32
    lr: float = 1e-3
    weights: str = "auto"
    alpha: float = 1.0
    width: float = 1.0
    cnn_depth: int = 2  # custom CNN convolutions per block after the first; 1 = the paper's design
    dropout: float = 0.2
    augment: str = "mild"  # colour jitter with the eight symmetries: trainer.augment.STRENGTHS
    label_smoothing: float = 0.0
    ema: float = 0.0  # momentum of an exponential moving average of the weights; 0 off
    lr_schedule: str = "cosine"  # after the warm-up: cosine decay to 1 %, or constant
    smote: bool = True
    split: str = "image"
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    test_data: str | None = None
    seed: int = 0
    subset: str = "Original"
    stain_norm: str = "none"
    near_dup_distance: int = 4  # perceptual-hash bits (trainer.neardup); -1 turns the grouping off
    patience: int = 10
    bn_recal_images: int = BN_RECAL_IMAGES
    mixed_precision: bool = False
    workers: int | None = None  # augmentation threads; None: trainer.pipeline.default_workers
    verbose: int = 1  # 0: silent; otherwise a line per epoch (and a live bar in a terminal), trainer.progress
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    recipe: str = "full"  # the preset the other fields started from (trainer.recipes)


@dataclass
class TrainingData:
    splits: dict
    x: dict  # split name -> uint8 images
    y: dict  # split name -> int labels
    split_meta: dict
    stain: object | None  # edge.stain.StainNorm or None


def default_epochs(pretrained: bool) -> int:
    return 30 if pretrained else 60


def prepare_data(cfg: TrainConfig, run: Path) -> TrainingData:
    """Scan, de-duplicate, decode, split, write split.json, fit the stain target.

    Every image is decoded before the split, so a file that cannot be used is in no split
    list, count or fingerprint, and a class left without a validation or test image is
    refused rather than reported on with a hole in it.
    """
    data_root = Path(cfg.data)
    found = scan(data_root, cfg.subset)
    if not found.items:
        raise BadInput(f"{data_root}: no images found")
    test_items, test_root, test_dups, skipped = None, None, [], list(found.skipped)
    if cfg.test_data:
        test_root = Path(cfg.test_data)
        test_scan = scan(test_root, cfg.subset)
        test_items, test_dups = remove_duplicates(test_scan.items)
        skipped += list(test_scan.skipped)
    kept, dups = remove_duplicates(found.items, reference=test_items or ())
    progress = cfg.verbose > 0
    every = kept + list(test_items or ())
    x_all, y_all, bad = load_images(every, InputSpec(height=cfg.img_size, width=cfg.img_size), progress=progress)
    report_skipped(skipped + bad, data_root, listed_in=str(run / SPLIT_FILE))
    unusable = {p for p, _ in bad}
    row = {item.path: k for k, item in enumerate(i for i in every if i.path not in unusable)}
    kept = [i for i in kept if i.path not in unusable]
    if test_items is not None:
        test_items = [i for i in test_items if i.path not in unusable]
    kept, splits, near = split_near_duplicates(kept, test_items, cfg)
    for name in ("train", "val", "test"):
        if not splits[name]:
            hint = " (block splits keep runs of 20 files together: each class needs at least 41)" if cfg.split == "block" else ""
            raise BadInput(f"{data_root}: the {name} split is empty ({len(kept)} usable images){hint}; "
                           "add images or change the ratios")
    check_every_class(splits, data_root)
    x, y = {}, {}
    for name in ("train", "val", "test"):
        rows = np.array([row[i.path] for i in splits[name]], np.int64)
        x[name], y[name] = x_all[rows], y_all[rows]
    del x_all
    stain = None
    if cfg.stain_norm != "none":
        rng = np.random.default_rng(cfg.seed)
        pick = rng.choice(len(splits["train"]), min(256, len(splits["train"])), replace=False)
        stain = fit_stain_norm(cfg.stain_norm, x["train"][np.sort(pick)])
        for images in x.values():  # what preprocess does after its resize, on the already resized images
            def one(k, images=images):
                images[k] = stain_normalize(images[k], stain)

            with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
                list(pool.map(one, range(len(images))))
    meta = {"data_root": data_root, "test_root": test_root, "protocol": cfg.split, "seed": cfg.seed,
            "ratios": list(cfg.ratios), "subset": cfg.subset, "duplicates": dups + test_dups,
            "skipped": skipped + bad, "near_duplicates": near}
    write_split(run, splits, meta)
    split_meta = json.loads((run / SPLIT_FILE).read_text())
    split_meta.pop("splits")
    return TrainingData(splits, x, y, split_meta, stain)


def split_near_duplicates(kept, test_items, cfg: TrainConfig):
    """Split with each group of near-duplicates (trainer.neardup) kept whole; (kept, splits, summary)."""
    groups = neardup.near_duplicate_groups(list(kept) + list(test_items or ()), cfg.near_dup_distance)
    near_test: list = []
    if test_items:
        kept, near_test = neardup.drop_near_test(kept, groups, test_items)
    splits = split_items(kept, cfg.split, cfg.seed, cfg.ratios, test_items=test_items)
    splits, moved = neardup.keep_groups_together(splits, groups, fixed=("test",) if test_items else ())
    for name in ("train", "val") if test_items else ("train", "val", "test"):
        splits[name].sort(key=item_key)
    return kept, splits, neardup.summary(groups, moved, len(near_test), cfg.near_dup_distance)


def _compile(model, cfg: TrainConfig, lr: float, steps: int, epochs: int, warmup_epochs: float):
    import keras

    total = max(1, steps * epochs)
    warmup = min(total // 2, max(1, round(steps * warmup_epochs))) if total > 1 else 0
    floor = 0.01 if cfg.lr_schedule == "cosine" else 1.0  # CosineDecay with alpha 1 stays at its peak
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr * 0.01, decay_steps=max(1, total - warmup), alpha=floor,
        warmup_target=lr if warmup else None, warmup_steps=warmup)
    loss = "sparse_categorical_crossentropy"
    if cfg.label_smoothing:
        from trainer.losses import SmoothedSparseCrossentropy

        loss = SmoothedSparseCrossentropy(cfg.label_smoothing, len(cfg.labels))
    optimizer = keras.optimizers.Adam(schedule, use_ema=cfg.ema > 0, ema_momentum=cfg.ema or 0.99)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit_compile())


def check_knobs(cfg: TrainConfig) -> None:
    """BadInput naming the first training knob out of range."""
    if cfg.augment not in STRENGTHS:
        raise BadInput(f"--augment {cfg.augment!r}: unknown (choose from {', '.join(STRENGTHS)})")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise BadInput(f"--lr-schedule {cfg.lr_schedule!r}: unknown (choose from {', '.join(LR_SCHEDULES)})")
    if not 0 <= cfg.label_smoothing < 0.5:
        raise BadInput(f"--label-smoothing {cfg.label_smoothing}: must be in [0, 0.5)")
    if not 0 <= cfg.ema < 1:
        raise BadInput(f"--ema {cfg.ema}: must be in [0, 1) (0 off; 0.99 averages about the last 100 steps)")


def fit(cfg: TrainConfig, data: TrainingData, run: Path):
    """Build and train; returns (model, weights_source, history dict, train img/s, epochs run)."""
    import keras

    from trainer.pipeline import TrainBatches, default_workers  # imports keras: start-up cost

    x_train, y_train = data.x["train"], data.y["train"]
    if cfg.smote:
        x_train, y_train = smote_balance(x_train, y_train, seed=cfg.seed)
    strategy = distribution_strategy()
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model, source = build(cfg.arch, cfg.img_size, len(LABELS), cfg.alpha, cfg.weights, cfg.dropout,
                              cfg.width, cfg.cnn_depth)
    pretrained = source != "none"
    epochs = cfg.epochs or default_epochs(pretrained)
    # Full batches only: one input shape, so XLA compiles the training step once.
    workers = cfg.workers if cfg.workers is not None else default_workers(accelerated())
    jitter = STRENGTHS[cfg.augment]
    batches = TrainBatches(x_train, y_train, cfg.batch, seed=cfg.seed, drop_remainder=True, threads=workers,
                           augment=jitter is not None, jitter=jitter)
    steps = len(batches)
    rng = np.random.default_rng(cfg.seed)
    recal = data.x["train"][rng.permutation(len(data.x["train"]))[: cfg.bn_recal_images]]
    val_cb = make_validation_callback(x_recal=recal, x_val=data.x["val"], y_val=data.y["val"], batch=cfg.batch,
                                      patience=cfg.patience, checkpoint=str(run / "best.weights.h5"))
    callbacks = [val_cb]  # validation first: the progress line reads its val_loss / val_accuracy
    if cfg.verbose:
        callbacks.append(make_progress_callback(epochs))
    record = architecture(cfg.arch)
    if record.base is not None and pretrained:  # a pretrained base: the new head first, then fine-tune
        head = min(5, max(1, epochs // 5))
        phases = [("head", head, cfg.lr, 0.0), ("fine-tune", epochs - head, cfg.lr * HEAD_LR_FACTOR, 1.0)]
    else:
        phases = [("train", epochs, cfg.lr, min(3.0, max(1.0, epochs / 10)))]
    history: dict[str, list] = {}
    done = 0
    for name, n_epochs, lr, warmup in phases:
        if n_epochs <= 0:
            continue
        with scope:
            if name == "head":
                freeze_base(model)
            elif name == "fine-tune":
                unfreeze_upper_base(model, record.fine_tune_from)
            _compile(model, cfg, lr, steps, n_epochs, warmup)
        if cfg.verbose:
            print(f"phase {name}: {n_epochs} epochs, peak lr {lr:g}, {len(x_train)} training images/epoch",
                  flush=True)
        # With --ema the averaged weights are swapped in before validation, so they are what is scored and kept.
        swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema else []
        h = model.fit(batches, epochs=done + n_epochs, initial_epoch=done, callbacks=swap + callbacks,
                      shuffle=False, verbose=0)  # TrainBatches shuffles itself; trainer.progress reports
        ran = len(h.history.get("loss", []))
        if cfg.verbose and ran < n_epochs:
            print(f"phase {name}: stopped after {ran} of {n_epochs} epochs, no better validation for "
                  f"{cfg.patience} epochs (best so far: epoch {val_cb.best_epoch + 1})", flush=True)
        for key, values in h.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([name] * ran)
        done += ran
        if val_cb.best_weights is not None:
            model.set_weights(val_cb.best_weights)
    batches.close()
    history["best_epoch"] = val_cb.best_epoch + 1
    history["train_seconds"] = [round(t, 3) for t in val_cb.train_seconds]  # per epoch, validation excluded
    # Steady-state speed: a phase's first epoch includes compiling its training step.
    phases_run = history["phase"]
    secs = [t for i, t in enumerate(val_cb.train_seconds)
            if i > 0 and phases_run[i] == phases_run[i - 1]] or val_cb.train_seconds
    img_per_s = min(len(batches) * batches.batch_size, len(x_train)) * len(secs) / max(sum(secs), 1e-9)
    return model, source, history, img_per_s, done


def train(cfg: TrainConfig) -> dict:
    """Run the whole flow; returns report.json's content."""
    start = time.perf_counter()
    run = Path(cfg.out)
    architecture(cfg.arch)  # BadInput for an unknown one, before any work
    check_knobs(cfg)
    if not Path(cfg.data).is_dir():
        raise BadInput(f"--data {cfg.data}: not a folder")
    if cfg.weights not in ("auto", "imagenet", "none") and not Path(cfg.weights).is_file():
        raise BadInput(f"--weights {cfg.weights}: no such file (expected auto, imagenet, none or a .h5 path)")
    if cfg.batch < 1 or cfg.img_size < 32 or (cfg.epochs is not None and cfg.epochs < 1):
        raise BadInput("--batch and --epochs must be >= 1 and --img-size >= 32")
    run.mkdir(parents=True, exist_ok=True)
    import keras

    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    data = prepare_data(cfg, run)
    config = asdict(cfg)
    config["stain_norm"] = data.stain.model_dump(mode="json") if data.stain else {"method": "none", "target": {}}
    (run / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    model, source, history, img_per_s, epochs_run = fit(cfg, data, run)
    model.save(run / MODEL_FILE)
    config.update(weights_source=source, epochs_run=epochs_run)
    (run / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (run / HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n")
    report = score_test(model, data.x["test"], data.y["test"], cfg.batch, data.x["train"], data.y["train"], cfg.seed)
    m = data.split_meta
    report.update(
        split={"protocol": m["protocol"], "seed": m["seed"], "counts": m["counts"],
               "duplicates_removed": m["duplicates_removed"], "near_duplicates": m.get("near_duplicates"),
               "fingerprint": m["fingerprint"],
               "test_source": m["test_root"] or f"{m['protocol']} split of {m['data_root']}"},
        smote=cfg.smote, augment=cfg.augment, label_smoothing=cfg.label_smoothing, ema=cfg.ema,
        lr_schedule=cfg.lr_schedule, weights=source, weights_requested=cfg.weights, arch=cfg.arch, img_size=cfg.img_size,
        **sizing(cfg.arch, cfg), recipe=cfg.recipe, epochs=epochs_run,
        best_epoch=history["best_epoch"], stain_norm=cfg.stain_norm, train_img_per_s=round(img_per_s, 1))
    expected = class_prior(data.y["train"], len(LABELS))  # before SMOTE: the data's own prior
    model_prior = np.full(len(LABELS), 1.0 / len(LABELS)) if cfg.smote else expected
    report["postprocess"] = model_report(model, data.x["val"], data.y["val"], data.x["test"], data.y["test"],
                                         model_prior, expected, cfg.batch, run / "reliability.png")
    report.update({k: report["postprocess"][k] for k in ("accuracy_tta", "accuracy_box", "ece_box", "reliability_png")})

    report["curves_png"] = str(plot_history(history, run / "training_curves.png"))
    report["confusion_png"] = str(plot_confusion(report, run / "confusion_matrix.png"))
    report["versions"] = versions()
    report["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(run / REPORT_FILE, report)
    return report


def score_test(model, x_test, y_test, batch, x_train, y_train, seed) -> dict:
    """Model report on (x_test, y_test) plus the colour baseline fitted on (x_train, y_train)."""
    probs = model.predict(x_test, batch_size=batch, verbose=0)
    report = classification_report(y_test, probs, LABELS)
    return compare(report, baseline_accuracy(x_train, y_train, x_test, y_test, seed))
