"""What self-supervised pretraining buys with few labels: VICReg-pretrained against random init.

VICReg pretrains once on images whose labels it ignores; then the same few labelled fields
per class train the classifier twice, from the pretrained weights and from random ones, once
per seed, and both are scored on fields never used for training. Two sources:
- `compare`: one synthetic set (`benchmarks/bench_pretrain.py`; a slow test asserts the gain);
- `compare_on_split`: a RUN's split.json on real images (`benchmarks/real_fewlabels.py`):
  VICReg sees the training split only, each seed draws its own few labels per class from it,
  and the test split, which pretraining never saw, scores every model.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from trainer.baseline import baseline_accuracy
from trainer.models import architecture
from trainer.pretrain import PretrainConfig, pretrain
from trainer.run import load_run, load_split, read_split
from trainer.synth.fields import generate_dataset
from trainer.train import TrainConfig, train

INITS = ("random init", "VICReg")


def run_name(init: str, labels: int, seed: int) -> str:
    """The folder of one fine-tuning run under compare_on_split's root."""
    return f"{init.replace(' ', '_')}-{labels}-{seed}"


def rescore_baselines(root: Path, result: dict) -> dict:
    """Refit each row's colour baseline on its run's own training split with the current
    trainer.baseline (a result written before a baseline fix stays comparable); returns result."""
    for row in result["rows"]:
        run = load_run(Path(root) / run_name(row["init"], row["labels"], row["seed"]))
        (x_tr, y_tr), (x_te, y_te) = load_split(run, "train"), load_split(run, "test")
        row["baseline_accuracy"] = baseline_accuracy(x_tr, y_tr, x_te, y_te, row["seed"])
    return result


def split_few(data: Path, few: Path, rest: Path, labels: int) -> None:
    """The first `labels` files of each class folder to `few`, the others to `rest`."""
    for folder in sorted((data / "Original").iterdir()):
        files = sorted(folder.iterdir())
        for dst, chosen in ((few, files[:labels]), (rest, files[labels:])):
            (dst / "Original" / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, dst / "Original" / folder.name / f.name)


def fine_tune(few: Path, test: Path, out: Path, arch: str, weights: str, size: int, seed: int, sizing: dict,
              epochs: int | None = None, steps: int = 150, batch: int = 16) -> dict:
    """Train on `few` (3/4 train, 1/4 validation) and report on `test`: for `epochs`, or when None for
    about `steps` optimiser steps (the same for every label count, so more labels are not more updates)."""
    extra: dict = {}
    if epochs is None:
        n_train = int(sum(1 for f in few.rglob("*") if f.is_file()) * 0.75)
        batch = max(4, min(batch, n_train // 2))
        epochs = max(1, math.ceil(steps / max(1, n_train // batch)))
        extra["bn_recal_images"] = min(128, n_train)
    return train(TrainConfig(data=str(few), out=str(out), arch=arch, test_data=str(test), ratios=(0.75, 0.25, 0.0),
                             epochs=epochs, img_size=size, batch=batch, weights=weights, smote=False, verbose=0,
                             patience=epochs, near_dup_distance=-1, seed=seed, **extra, **sizing))


def compare(root: Path, arch: str = "custom_cnn", per_class: int = 150, labels: int = 10, size: int = 64,
            look: str = "closeup", pretrain_epochs: int = 80, epochs: int = 20, batch: int = 64,
            seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """{'pretrain': the pretraining report, 'random init' / 'VICReg': test accuracy per seed, 'n': test fields}."""
    root = Path(root)
    data, few, rest = root / "all", root / "few", root / "rest"
    generate_dataset(data, per_class=per_class, size=size, seed=0, progress=False, look=look)
    split_few(data, few, rest, labels)
    small = architecture(arch).small
    pre = pretrain(PretrainConfig(data=str(data), out=str(root / "pre"), arch=arch, img_size=size,
                                  epochs=pretrain_epochs, batch=batch, proj_dim=256, verbose=0, **small))
    result: dict = {"pretrain": pre, "labels_per_class": labels, "look": look, "size": size}
    for name, weights in zip(INITS, ("none", pre["weights"])):
        for seed in seeds:
            report = fine_tune(few, rest, root / run_name(name, labels, seed), arch, weights, size, seed, small,
                               epochs=epochs)
            result.setdefault(name, []).append(float(report["accuracy"]))
            result["n"] = report["n"]
    result["gain"] = float(np.mean(result["VICReg"]) - np.mean(result["random init"]))
    return result


def link_split(split_json: Path, name: str, dst: Path, data_root: Path | None = None,
               per_class: int | None = None, seed: int = 0) -> int:
    """Symlink split `name` of a RUN's split.json (read as trainer.run reads it, re-rooted at
    `data_root`) into class folders under `dst`: all of it, or `per_class` files of each class
    drawn with `seed`; returns the number linked. No image is copied, and none outside its root."""
    info = read_split(Path(split_json), data=data_root)
    roots = {Path(p).resolve() for p in (data_root or info.meta["data_root"], info.meta.get("test_root")) if p}
    rng = np.random.default_rng(seed)
    linked = 0
    for label in info.meta["labels"]:
        paths = sorted(i.path for i in info.splits[name] if i.label == label)
        if per_class is not None:
            paths = [paths[k] for k in sorted(rng.choice(len(paths), min(per_class, len(paths)), replace=False))]
        (dst / label).mkdir(parents=True, exist_ok=True)
        for path in paths:
            target = path.resolve()
            if not any(target.is_relative_to(r) for r in roots):
                raise ValueError(f"{split_json}: {path} lies outside the data folders")
            (dst / label / f"{linked:05d}-{path.name}").symlink_to(target)
            linked += 1
    return linked


def compare_on_split(split_json: Path, root: Path, arch: str = "custom_cnn", size: int = 128,
                     label_counts: tuple[int, ...] = (10, 25, 50), seeds: tuple[int, ...] = (0, 1, 2),
                     pretrain_epochs: int = 30, steps: int = 150, batch: int = 64, data_root: Path | None = None,
                     sizing: dict | None = None, progress=print) -> dict:
    """{'pretrain': report, 'rows': [{labels, init, seed, accuracy, baseline_accuracy, n}], 'n_test': int}."""
    root = Path(root)
    sizing = architecture(arch).small if sizing is None else sizing
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        shutil.rmtree(d, ignore_errors=True)
    link_split(split_json, "train", train_dir, data_root)
    n_test = link_split(split_json, "test", test_dir, data_root)
    pre = pretrain(PretrainConfig(data=str(train_dir), out=str(root / "pre"), arch=arch, img_size=size,
                                  epochs=pretrain_epochs, batch=batch, proj_dim=256, verbose=0, **sizing))
    progress(f"pretrain: {pre['epochs']} epochs, {pre['wall_s']} s, loss {pre['loss'][0]:.3f} -> {pre['loss'][-1]:.3f}, "
             f"5-NN {pre['knn_accuracy_random_init']:.3f} -> {pre['knn_accuracy']:.3f}")
    rows = []
    for labels in label_counts:
        for seed in seeds:
            few = root / f"few{labels}-{seed}"
            shutil.rmtree(few, ignore_errors=True)
            link_split(split_json, "train", few, data_root, per_class=labels, seed=seed)
            for name, weights in zip(INITS, ("none", pre["weights"])):
                out = root / run_name(name, labels, seed)
                r = fine_tune(few, test_dir, out, arch, weights, size, seed, sizing, steps=steps)
                rows.append({"labels": labels, "init": name, "seed": seed, "accuracy": float(r["accuracy"]),
                             "baseline_accuracy": float(r["baseline_accuracy"]), "n": r["n"],
                             "wall_s": r["wall_s"]})
                progress(f"{labels} labels/class, {name}, seed {seed}: {100 * r['accuracy']:.1f} % "
                         f"(colour baseline {100 * r['baseline_accuracy']:.1f} %, {r['wall_s']:.0f} s)")
    return {"pretrain": pre, "rows": rows, "n_test": n_test, "arch": arch, "size": size, "sizing": sizing,
            "steps": steps}
