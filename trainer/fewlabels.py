"""What self-supervised pretraining buys with few labels: VICReg-pretrained against random init.

One synthetic set; VICReg pretrains on all of it (labels ignored); then the same few
labelled fields per class train the classifier twice, from the pretrained weights and from
random ones, once per seed (the seed draws the train/validation split of the few), and both
are scored on every field not used for training. `benchmarks/bench_pretrain.py` prints the
result; a slow test asserts the gain at a tiny scale.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from trainer.models import architecture
from trainer.pretrain import PretrainConfig, pretrain
from trainer.synth.fields import generate_dataset
from trainer.train import TrainConfig, train


def split_few(data: Path, few: Path, rest: Path, labels: int) -> None:
    """The first `labels` files of each class folder to `few`, the others to `rest`."""
    for folder in sorted((data / "Original").iterdir()):
        files = sorted(folder.iterdir())
        for dst, chosen in ((few, files[:labels]), (rest, files[labels:])):
            (dst / "Original" / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, dst / "Original" / folder.name / f.name)


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
    for name, weights in (("random init", "none"), ("VICReg", pre["weights"])):
        for seed in seeds:
            report = train(TrainConfig(data=str(few), out=str(root / f"{name.replace(' ', '_')}-{seed}"), arch=arch,
                                       test_data=str(rest), ratios=(0.75, 0.25, 0.0), epochs=epochs, img_size=size,
                                       batch=16, weights=weights, smote=False, verbose=0, patience=epochs,
                                       near_dup_distance=-1, seed=seed, **small))
            result.setdefault(name, []).append(float(report["accuracy"]))
            result["n"] = report["n"]
    result["gain"] = float(np.mean(result["VICReg"]) - np.mean(result["random init"]))
    return result
